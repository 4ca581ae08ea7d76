using System.Diagnostics;
using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet bench faithfulness</c>: does exactness buy faithfulness? Exact DeepLift, DeepLift with the <c>rescale</c>
/// and <c>row-mean</c> softmax rules, Integrated Gradients and Saliency explain the same texts (each text's predicted
/// class, centered logit, [PAD] reference), and every explanation is scored by the same perturbations
/// (<see cref="Engine.Faithfulness.FaithfulnessEvaluator"/>): mean comprehensiveness and sufficiency over 1/5/10/20 %,
/// the AOPC of the deletion and insertion curves, each averaged over the texts, beside each method's delta and cost.
/// </summary>
public static class BenchFaithfulnessCommand
{
    public const string Usage =
        "fleet bench faithfulness [--model sentiment-minilm|DIR] [--input texts.txt|texts.jsonl] [--texts N (default 8)] [--steps 32] [--precision float32|float64]";

    private static readonly string[] Sentences =
    {
        "The plot was dull but the acting was wonderful.",
        "I would not recommend this place to anyone.",
        "Fast delivery and the battery lasts for days.",
        "An absolute triumph: moving, funny and beautifully shot from start to finish.",
        "The update broke everything that used to work, and support never answered.",
        "The food was cold, the staff were rude and the bill was wrong.",
        "A quiet, thoughtful film that stays with you long after it ends.",
        "It works, I guess, but I expected much more for the price.",
    };

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "model", "input", "texts", "steps", "precision" }, Array.Empty<string>());
        int count = cl.Int("texts", Sentences.Length);
        if (count < 1) throw new UsageException("--texts must be at least 1");
        var texts = (cl.Value("input") is { } file ? TextInput.ReadFile(file).Select(t => t.Text) : Sentences).Take(count).ToList();
        var precision = cl.Value("precision") ?? "float32";
        int steps = cl.Int("steps", 32);
        using var loaded = LoadedModel.Load(ModelResolver.Resolve(cl.Value("model")), Engine.Text.DeviceSelector.Resolve(null));
        var explainer = new TextExplainer(loaded);
        var basis = new ExplainRequest { Precision = precision, Faithfulness = true, Steps = steps };
        var rows = new (string Name, ExplainRequest Request)[]
        {
            ("deeplift exact", basis),
            ("deeplift rescale", basis with { SoftmaxRule = "rescale" }),
            ("deeplift row-mean", basis with { SoftmaxRule = "row-mean" }),
            ($"integrated-gradients {steps}", basis with { Method = "integrated-gradients" }),
            ("saliency", basis with { Method = "saliency" }),
        };
        stdout.WriteLine($"bench faithfulness: {cl.Value("model") ?? "sentiment-minilm"}, {texts.Count} texts, {precision}, predicted class, centered logit, [PAD] reference");
        stdout.WriteLine("comprehensiveness (higher is better) and sufficiency (lower is better): mean over k = 1, 5, 10, 20 % of the tokens; AOPC of the deletion and insertion curves (higher is better); changes of p(class)");
        stdout.WriteLine($"{"method",-26} {"s/text",7} {"max rel delta",13} {"compr.",8} {"suff.",8} {"AOPC del",9} {"AOPC ins",9} {"inputs/text",11} {"faith. ms/text",14}");
        explainer.Explain(texts.Take(1).ToList(), basis with { Faithfulness = false }); // warm-up
        int[]? predicted = null;
        foreach (var (name, request) in rows)
        {
            var watch = Stopwatch.StartNew();
            var results = explainer.Explain(texts, request);
            double total = watch.Elapsed.TotalSeconds;
            var f = results.Select(r => r.Faithfulness).OfType<Engine.Faithfulness.FaithfulnessResult>().ToList();
            double faithMs = f.Sum(x => x.Milliseconds);
            double explainSeconds = (total - faithMs / 1000) / texts.Count;
            predicted ??= results.Select(r => r.TargetIndex).ToArray();
            if (!results.Select(r => r.TargetIndex).SequenceEqual(predicted))
                stdout.WriteLine($"  note: {name} explained a different class for some texts (its forward pass rounds differently)");
            stdout.WriteLine($"{name,-26} {explainSeconds,7:F3} {results.Max(r => r.RelativeDelta),13:E2} {f.Average(x => x.ComprehensivenessMean),8:F4} " +
                $"{f.Average(x => x.SufficiencyMean),8:F4} {f.Average(x => x.AopcDeletion),9:F4} {f.Average(x => x.AopcInsertion),9:F4} " +
                $"{f.Average(x => x.PerturbedInputs),11:F1} {faithMs / texts.Count,14:F1}");
        }
        return 0;
    }
}
