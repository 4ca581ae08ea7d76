using System.Diagnostics;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using static TorchSharp.torch;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet bench ig-steps</c>: Integrated Gradients' delta against its step count, for the trapezoid (Riemann) and
/// Gauss–Legendre rules, beside exact DeepLift's delta and cost on the same texts. On the random bert-base-sized
/// model by default, or on a real one (<c>--model sentiment-minilm</c> or a folder) with real sentences.
/// </summary>
public static class BenchIgStepsCommand
{
    public const string Usage =
        "fleet bench ig-steps  [--model sentiment-minilm|DIR] [--layers 12] [--texts 4] [--length 128] [--steps 8,16,32,50]";

    private static readonly string[] Sentences =
    {
        "The plot was dull but the acting was wonderful.",
        "I would not recommend this restaurant to anyone; the food was cold and the staff were rude.",
        "An absolute triumph: moving, funny and beautifully shot from start to finish.",
        "The update broke everything that used to work, and support never answered.",
    };

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "model", "layers", "texts", "length", "steps" }, Array.Empty<string>());
        var steps = (cl.Value("steps") ?? "8,16,32,50").Split(',').Select(s => int.TryParse(s, out var n) && n > 0 ? n : throw new UsageException("--steps takes counts like 8,16,32,50")).ToArray();
        int texts = cl.Int("texts", 4);
        var model = cl.Value("model");
        using var loaded = model is null ? LoadedModel.Load(BenchCommand.BertBaseDir(cl.Int("layers", 12)), CPU) : LoadedModel.Load(ModelResolver.Resolve(model), CPU);
        var explainer = new TextExplainer(loaded);
        List<string> inputs;
        if (model is null)
        {
            // Random ids of one length (the random model has no meaningful text).
            int length = cl.Int("length", 128);
            var ids = BenchCommand.RandomIds(texts, length, loaded.Config.VocabSize, seed: 3);
            inputs = Enumerable.Range(0, texts)
                .Select(i => string.Join(' ', Enumerable.Range(1, length - 2).Select(t => loaded.Tokenizer.IdToToken((int)ids[i, t]) ?? "[UNK]")).Replace("##", ""))
                .ToList();
        }
        else inputs = Sentences.Take(texts).ToList();
        stdout.WriteLine($"bench ig-steps: {(model ?? $"bert-base-sized, {cl.Int("layers", 12)} layers, random init")}, {inputs.Count} texts, float32, target: predicted class, output: centered logit");
        stdout.WriteLine($"{"method",-40} {"s/text",8} {"max |delta|",12} {"max relative delta",19}");
        Row(stdout, "deeplift (exact)", explainer, inputs, new ExplainRequest { Method = "deeplift" });
        foreach (var rule in new[] { "riemann-trapezoid", "gauss-legendre" })
            foreach (int n in steps)
                Row(stdout, $"integrated-gradients {rule} {n}", explainer, inputs, new ExplainRequest { Method = "integrated-gradients", Steps = n, Integration = rule });
        return 0;
    }

    private static void Row(TextWriter stdout, string name, TextExplainer explainer, List<string> inputs, ExplainRequest request)
    {
        explainer.Explain(inputs.Take(1).ToList(), request); // warm-up
        var sw = Stopwatch.StartNew();
        var results = explainer.Explain(inputs, request);
        double perText = sw.Elapsed.TotalSeconds / inputs.Count;
        stdout.WriteLine($"{name,-40} {perText,8:F3} {results.Max(r => Math.Abs(r.Delta)),12:E2} {results.Max(r => r.RelativeDelta),19:E2}");
    }
}
