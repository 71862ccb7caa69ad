namespace Puzzle;

/// <summary>An error a user can act on: the message names the file, the field and the numbers.</summary>
public class PuzzleException(string message, Exception? inner = null) : Exception(message, inner);
