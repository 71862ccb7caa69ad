using TorchSharp;
foreach (var m in typeof(torch.Tensor).GetMethods().Where(m => m.GetParameters().Any(p => p.ParameterType == typeof(torch.ScalarType)) && !m.Name.StartsWith("to"))) Console.WriteLine(m);
