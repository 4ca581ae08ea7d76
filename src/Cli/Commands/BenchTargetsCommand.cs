using System.Diagnostics;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using static TorchSharp.torch;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet bench targets</c>: what explaining every class costs against explaining one (issue #16 item 3's goal:
/// all 3 classes of a 3-label model for at most 1.6× one). The model's encoder gets a random linear head with
/// <c>--labels</c> classes (its own head when it already has that many); the two runs alternate on the same batch and
/// the figure is the median of the per-pair ratios (the machine's speed drifts, ratios drift less).
/// </summary>
public static class BenchTargetsCommand
{
    public const string Usage =
        "fleet bench targets  [--model sentiment-minilm|DIR] [--labels 3] [--texts 8] [--length 64] [--pairs 5] [--precision float32|float64]";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "model", "labels", "texts", "length", "pairs", "precision" }, Array.Empty<string>());
        int labels = cl.Int("labels", 3), texts = cl.Int("texts", 8), length = cl.Int("length", 64), pairs = cl.Int("pairs", 5);
        if (labels < 2 || texts < 1 || length < 3 || pairs < 1) throw new UsageException("--labels >= 2, --texts >= 1, --length >= 3, --pairs >= 1");
        var precision = new ExplainRequest { Precision = cl.Value("precision") ?? "float32" }.ParsePrecision();
        using var loaded = LoadedModel.Load(ModelResolver.Resolve(cl.Value("model")), CPU);
        var encoder = loaded.For(precision);
        var gen = new Generator(11);
        bool own = encoder.OutputSize == labels && encoder.HasClassifier;
        // A head of its own shares the encoder's weights (nothing copied); disposing it frees the head only.
        using var head = own ? null : encoder.WithClassifier(randn(new long[] { labels, loaded.Config.HiddenSize }, generator: gen),
            randn(new long[] { labels }, generator: gen) * 0.1, Enumerable.Range(0, labels).Select(i => $"LABEL_{i}").ToList());
        var model = head ?? encoder;
        length = Math.Min(length, loaded.Config.MaxSequenceLength);
        var ids = tensor(BenchCommand.RandomIds(texts, length, loaded.Config.VocabSize, seed: 5));
        ids[.., 0] = loaded.Tokenizer.StartId;
        ids[.., length - 1] = loaded.Tokenizer.EndId;
        var reference = new TextExplainer(loaded).ReferenceEmbeddings("pad", length, model);
        var batch = new AttributionBatch(ids, ones_like(ids), new[] { reference }, null);
        var options = new MethodOptions();
        var method = new DeepLift();
        double One() { var w = Stopwatch.StartNew(); using (NewDisposeScope()) method.Attribute(model, batch, options); return w.Elapsed.TotalSeconds; }
        double All()
        {
            var w = Stopwatch.StartNew();
            using (NewDisposeScope()) EveryTarget.Attribute(method, model, batch, options);
            return w.Elapsed.TotalSeconds;
        }
        // DeepLift's forward pass alone (rules and the multipliers autograd keeps, no backward): what every class shares.
        double Forward()
        {
            var w = Stopwatch.StartNew();
            using (NewDisposeScope())
            using (enable_grad())
            {
                var x = model.WordEmbeddings(ids).detach().requires_grad_(true);
                model.Forward(new DeepLiftOps(options.SoftmaxRule, options.PromoteMultipliers), new Engine.Ops.Act(x, reference), ones_like(ids));
            }
            return w.Elapsed.TotalSeconds;
        }
        One(); All(); Forward(); // warm-up
        var ratios = new List<double>();
        var ones = new List<double>();
        var alls = new List<double>();
        var forwards = new List<double>();
        for (int p = 0; p < pairs; p++)
        {
            forwards.Add(Forward());
            double one = One(), all = All();
            ones.Add(one);
            alls.Add(all);
            ratios.Add(all / one);
        }
        double Median(List<double> v) { var s = v.OrderBy(x => x).ToList(); return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2; }
        using (NewDisposeScope())
        {
            var every = EveryTarget.Attribute(method, model, batch, options);
            double maxDelta = every.Max(o => o.Delta.abs().max().item<double>());
            stdout.WriteLine($"bench targets: {cl.Value("model") ?? "sentiment-minilm"} encoder, {labels} labels, {texts} texts x {length} tokens, {precision}, DeepLift exact, {pairs} pairs");
            stdout.WriteLine($"one target (predicted class): median {Median(ones) / texts:F4} s/text");
            int backwards = options.Output == OutputKind.CenteredLogit ? labels - 1 : labels; // see EveryTarget
            stdout.WriteLine($"all {labels} targets (one forward, {backwards} backwards): median {Median(alls) / texts:F4} s/text, max |delta| over every class {maxDelta:E2}");
            double f = Median(forwards) / texts, b = Math.Max(0, Median(ones) / texts - f);
            stdout.WriteLine($"DeepLift forward alone: median {f:F4} s/text; so one backward ~ {b:F4} s/text ({b / f:F2}x the forward): " +
                $"the expected cost for {labels} classes is (F + {backwards}B) / (F + B) = {(f + backwards * b) / (f + b):F2}x");
            stdout.WriteLine($"cost of every class / one class: median of per-pair ratios {Median(ratios):F2}x (pairs: {string.Join(", ", ratios.Select(r => r.ToString("F2")))})");
        }
        return 0;
    }
}
