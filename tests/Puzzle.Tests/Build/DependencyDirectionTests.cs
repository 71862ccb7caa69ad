using System.Text.RegularExpressions;

namespace Puzzle.Tests.Build;

/// <summary>
/// Dependencies between the folders of src/Puzzle point one way: Model ← Checkpoints ← Runtime/Training ← Stages ←
/// Pipeline ← CLI, with IO, Config and the domain types below them. A file may use a folder of a lower layer only;
/// a `using Puzzle.X` or a reference to one of X's types from a file in a folder of the same or a lower layer fails
/// here with the file, the folder and the rule.
/// </summary>
public sealed partial class DependencyDirectionTests
{
    /// <summary>Layers, lowest first. Folders of one layer may not use each other either (no cycles between peers).</summary>
    static readonly string[][] Layers =
    [
        ["Base"],                                   // src/Puzzle/{Log,Progress,PuzzleException}.cs: used everywhere
        ["IO"],                                     // atomic files, JSON fields, fingerprints, document sources
        ["Config"],                                 // the run config and its defaults
        ["Model", "Tokenization"],                  // the network; tokenizers
        ["Checkpoints", "Domain"],                  // HF / safetensors files; variants, candidates, the search space
        ["Data"],                                   // token shards and manifests
        ["Runtime", "Parents"],                     // generation, evaluation, devices; random parents
        ["Training", "Gguf"],                       // pretraining, distillation; llama.cpp export
        ["Stages"],                                 // the pipeline's stages
        ["Planning"],                               // estimates of the stages
        ["Pipeline"],                               // src/Puzzle/{Pipeline,Demo}.cs: the stages in order
        ["Cluster"],                                // sbatch scripts of the pipeline's stages
    ];

    static readonly string[] BaseFiles = ["Log.cs", "Progress.cs", "PuzzleException.cs"];

    static string Source()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Puzzle.slnx"))) return Path.Combine(dir.FullName, "src", "Puzzle");
        throw new InvalidOperationException("project root not found");
    }

    static string FolderOf(string src, string file)
    {
        var parts = Path.GetRelativePath(src, file).Split(Path.DirectorySeparatorChar);
        return parts.Length > 1 ? parts[0] : BaseFiles.Contains(parts[0]) ? "Base" : "Pipeline";
    }

    static IEnumerable<string> SourceFiles(string src) => Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
        .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"));

    [GeneratedRegex(@"\b(?:class|record|struct|enum|interface)\s+(\w+)")]
    private static partial Regex Declaration();

    [GeneratedRegex(@"using\s+(?:static\s+)?Puzzle\.(\w+)")]
    private static partial Regex UsingDirective();

    [GeneratedRegex(@"(?<![\w.])(?:Puzzle\.)?(\w+)\.(\w+)")]
    private static partial Regex Qualified();

    [GeneratedRegex(@"///.*|//.*|""(?:[^""\\\n]|\\.)*""")]
    private static partial Regex CommentsAndStrings();

    /// <summary>Every folder → folder use in src/Puzzle, with the files that make it.</summary>
    public static Dictionary<(string From, string To), SortedSet<string>> Edges(string src)
    {
        var types = new Dictionary<string, HashSet<string>>();
        var texts = new Dictionary<string, string>();
        foreach (string file in SourceFiles(src))
        {
            string text = CommentsAndStrings().Replace(File.ReadAllText(file), "");
            texts[file] = text;
            string folder = FolderOf(src, file);
            if (!types.TryGetValue(folder, out var set)) types[folder] = set = [];
            foreach (Match m in Declaration().Matches(text)) set.Add(m.Groups[1].Value);
        }
        var subNamespaces = Directory.GetDirectories(src).ToDictionary(d => Path.GetFileName(d), d => Directory.GetDirectories(d).Select(x => Path.GetFileName(x)).ToHashSet());
        var edges = new Dictionary<(string, string), SortedSet<string>>();
        void Add(string from, string to, string file)
        {
            if (from == to) return;
            if (!edges.TryGetValue((from, to), out var files)) edges[(from, to)] = files = new(StringComparer.Ordinal);
            files.Add(Path.GetRelativePath(src, file));
        }
        foreach (var (file, text) in texts)
        {
            string me = FolderOf(src, file);
            foreach (Match m in UsingDirective().Matches(text))
                if (types.ContainsKey(m.Groups[1].Value)) Add(me, m.Groups[1].Value, file);
            foreach (Match m in Qualified().Matches(text))
            {
                string ns = m.Groups[1].Value, member = m.Groups[2].Value;
                if (types.TryGetValue(ns, out var declared) && ns is not ("Base" or "Pipeline")
                    && (declared.Contains(member) || subNamespaces.GetValueOrDefault(ns)?.Contains(member) == true))
                    Add(me, ns, file);
            }
            if (me != "Pipeline" && Regex.IsMatch(text, @"(?<![\w.])(Pipeline|Demo)\.")) Add(me, "Pipeline", file);
        }
        return edges;
    }

    static int Rank(string folder)
    {
        for (int i = 0; i < Layers.Length; i++) if (Layers[i].Contains(folder)) return i;
        return -1;
    }

    [Fact]
    public void EveryFolderHasALayer()
    {
        string src = Source();
        var unplaced = Directory.GetDirectories(src).Select(Path.GetFileName).Where(f => f is not ("bin" or "obj") && Rank(f!) < 0).ToList();
        Assert.True(unplaced.Count == 0, $"src/Puzzle/{string.Join(", src/Puzzle/", unplaced)} has no layer in {nameof(DependencyDirectionTests)}.{nameof(Layers)}; place it");
    }

    [Fact]
    public void DependenciesPointDown_NoCycles()
    {
        var backwards = Edges(Source())
            .Where(e => Rank(e.Key.From) >= 0 && Rank(e.Key.To) >= 0 && Rank(e.Key.From) <= Rank(e.Key.To))
            .Select(e => $"{e.Key.From} -> {e.Key.To} ({string.Join(", ", e.Value)}): {e.Key.To} is {(Rank(e.Key.From) == Rank(e.Key.To) ? "a peer" : "above it")}")
            .ToList();
        Assert.True(backwards.Count == 0, "backwards dependencies:\n" + string.Join("\n", backwards));
    }

    [Fact]
    public void TheCheckSeesAUseOfAHigherFolder()
    {
        // The detector itself: a file in Model that names a Stages type, by using and by qualified name, is caught.
        string src = Path.Combine(TestSupport.TempDir(), "src", "Puzzle");
        Directory.CreateDirectory(Path.Combine(src, "Model"));
        Directory.CreateDirectory(Path.Combine(src, "Stages", "Library"));
        File.WriteAllText(Path.Combine(src, "Stages", "Library", "BlockLibrary.cs"), "namespace Puzzle.Stages.Library; public static class BlockLibrary { }");
        File.WriteAllText(Path.Combine(src, "Stages", "RunDirectory.cs"), "namespace Puzzle.Stages; public sealed class RunDirectory { }");
        File.WriteAllText(Path.Combine(src, "Model", "A.cs"), "using Puzzle.Stages.Library;\nnamespace Puzzle.Model; class A { }");
        File.WriteAllText(Path.Combine(src, "Model", "B.cs"), "namespace Puzzle.Model; class B { object? R = null as Stages.RunDirectory; } // Stages.Nothing");
        File.WriteAllText(Path.Combine(src, "Model", "C.cs"), "namespace Puzzle.Model; class C { string S = \"Stages.RunDirectory\"; }");
        var edges = Edges(src);
        Assert.Equal(["Model/A.cs", "Model/B.cs"], edges[("Model", "Stages")].Select(f => f.Replace('\\', '/')));
    }
}
