using System.Globalization;
using AttributionFleet.Cli.Report;
using AttributionFleet.Engine.Text;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Commands;

/// <summary><c>fleet explain [--model DIR] [--method …] [--json] "text" …</c></summary>
public static class ExplainCommand
{
    public const string Usage =
        "fleet explain [--model DIR|sentiment-minilm] [--method deeplift|deeplift-shap|integrated-gradients|gradient-shap|saliency|input-x-gradient]\n" +
        "              [--target LABEL|INDEX|all] [--output logit|centered-logit|probability] [--softmax-rule exact|rescale|row-mean]\n" +
        "              [--precision float32|float64] [--steps N] [--integration gauss-legendre|riemann-trapezoid] [--samples N]\n" +
        "              [--reference pad|mask|unk|zero|\"text\"] (repeat --reference for the SHAP methods)\n" +
        "              [--batch-size N] [--max-length N] [--json] [--html report.html] [--delta-threshold X (default 1e-4)]\n" +
        "              [--faithfulness] [--weak-reference-threshold P (default 0.05)]\n" +
        "              [--input texts.txt|texts.jsonl] [\"text\" ...]";

    public static readonly string[] ValueOptions =
        { "model", "method", "target", "output", "softmax-rule", "precision", "steps", "integration", "samples", "reference", "batch-size", "max-length", "input", "device", "html", "delta-threshold", "weak-reference-threshold" };

    public static ExplainRequest Request(CommandLine cl)
    {
        var method = cl.Value("method") ?? "deeplift";
        var references = cl.Values("reference").ToList();
        if (references.Count == 0)
            references = method is "deeplift-shap" or "gradient-shap" ? new List<string> { "pad", "mask", "unk", "zero" } : new List<string> { "pad" };
        var defaults = new ExplainRequest();
        return new ExplainRequest
        {
            Method = method,
            Target = cl.Value("target"),
            Output = cl.Value("output") ?? defaults.Output,
            SoftmaxRule = cl.Value("softmax-rule") ?? defaults.SoftmaxRule,
            Precision = cl.Value("precision") ?? defaults.Precision,
            Steps = cl.Int("steps", defaults.Steps),
            Integration = cl.Value("integration") ?? defaults.Integration,
            Samples = cl.Int("samples", defaults.Samples),
            References = references,
            BatchSize = cl.Int("batch-size", defaults.BatchSize),
            MaxLength = cl.Value("max-length") is null ? null : cl.Int("max-length", 0),
            Faithfulness = cl.Flag("faithfulness"),
            WeakReferenceThreshold = cl.Value("weak-reference-threshold") is { } weak
                ? double.TryParse(weak, NumberStyles.Float, CultureInfo.InvariantCulture, out var w) ? w : throw new UsageException($"--weak-reference-threshold must be a number, got '{weak}'")
                : defaults.WeakReferenceThreshold,
        };
    }

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, ValueOptions, new[] { "json", "faithfulness" });
        var request = Request(cl);
        request.Validate();
        var threshold = DeltaThreshold(cl);
        var texts = TextInput.Read(cl);
        using var model = LoadedModel.Load(ModelResolver.Resolve(cl.Value("model")), DeviceSelector.Resolve(cl.Value("device")));
        var results = new TextExplainer(model).Explain(texts.Select(t => t.Text).ToList(), request);
        var html = cl.Value("html");
        if (html is not null)
            File.WriteAllText(html, HtmlReport.Render(results, new HtmlReportOptions
            {
                Model = cl.Value("model") ?? DefaultModel.Id,
                Ids = texts.Select(t => t.Id).ToList(),
                DeltaThreshold = threshold,
            }));
        bool color = Output.UseColor;
        for (int i = 0; i < results.Count; i++)
        {
            var e = results[i];
            if (cl.Flag("json"))
            {
                stdout.WriteLine(Output.Line(Output.ExplanationJson(e, texts[i].Id)));
                continue;
            }
            stdout.WriteLine($"text       {e.Text}{(e.Truncated ? "  (truncated)" : "")}");
            stdout.WriteLine($"prediction {e.Prediction.Label} (p = {e.Prediction.Probability:0.0000})   target {e.TargetLabel} [{e.Output}]   method {e.Method}/{e.SoftmaxRule}/{e.Precision}");
            stdout.WriteLine($"f(x) {e.Fx:0.000000}   f(x0) {e.Fx0:0.000000}   delta {e.Delta:E2}   relative delta {e.RelativeDelta:E2}" +
                (e.RelativeDelta <= threshold ? "" : $"   WARNING: above {threshold:G3}, the scores do not add up"));
            stdout.WriteLine("words      " + Output.ColoredWords(Words.Merge(e), color));
            if (ExplanationExtras.WeakReferenceLine(e.Reference) is { } weakLine) stdout.WriteLine(weakLine);
            if (e.Faithfulness is { } faithfulness) stdout.WriteLine(ExplanationExtras.FaithfulnessLine(faithfulness));
            foreach (var c in e.Classes ?? Array.Empty<ClassAttribution>())
                stdout.WriteLine($"class {c.TargetLabel,-8} delta {c.Delta:E2}  " + Output.ColoredWords(Words.Merge(e.Text, e.Tokens, c.Scores, e.Offsets.Select(o => (o.Start, o.Length)).ToArray()), color) +
                    (ExplanationExtras.WeakReferenceLine(c.Reference) is null ? "" : "  (weak reference)"));
            int width = Math.Max(5, e.Tokens.Max(t => t.Length));
            foreach (var (token, score) in e.Tokens.Zip(e.Scores))
                stdout.WriteLine($"  {token.PadRight(width)} {score,12:+0.000000;-0.000000;0}");
            stdout.WriteLine();
        }
        if (html is not null && !cl.Flag("json")) stdout.WriteLine($"wrote {html}");
        return 0;
    }

    private static double DeltaThreshold(CommandLine cl)
    {
        var v = cl.Value("delta-threshold");
        if (v is null) return new HtmlReportOptions().DeltaThreshold;
        return double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d >= 0
            ? d
            : throw new UsageException($"--delta-threshold must be a non-negative number, got '{v}'");
    }
}
