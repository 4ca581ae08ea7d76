using AttributionFleet.Cli.Parsing;
using AttributionFleet.Cli.Report;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet explain</c>.</summary>
public sealed record ExplainOptions(
    string? Model, string? Device, ExplainFlags Flags, double? DeltaThreshold, double? RelativeDeltaThreshold, bool Json,
    string? Html, string? Input, IReadOnlyList<string> Texts)
{
    /// <summary>explain's relative threshold when none is given (the HTML report's warning line too).</summary>
    public const double DefaultRelativeDeltaThreshold = 1e-4;
    public double RelativeThreshold => RelativeDeltaThreshold ?? DefaultRelativeDeltaThreshold;
}

/// <summary><c>fleet explain [--model DIR] [--method …] [--json] [--html FILE] "text" … | --input FILE</c></summary>
public static class ExplainCommand
{
    /// <summary>The command-line form (tests, scripts): parsed as <c>fleet explain ARGS</c>, errors printed and mapped to exit codes.</summary>
    public static int Run(string[] args, TextWriter stdout) => Parsing.FleetCli.Run(["explain", .. args], stdout, Console.Error, CancellationToken.None);

    public const string Description = "Explain each text's prediction token by token (exact DeepLift by default) and report the delta.";

    /// <summary>Exit 0, or 1 when a text's forward or scores are not finite (those texts get status non_finite).</summary>
    public static int Run(ExplainOptions o, TextWriter stdout, CancellationToken cancel = default)
    {
        var request = o.Flags.ToRequest();
        request.Validate();
        var texts = TextInput.Read(o.Texts, o.Input);
        using var html = o.Html is null ? null : AtomicFile.Create(o.Html, "--html");
        var device = DeviceSelector.Resolve(o.Device);
        PrecisionSupport.Check(request.ParsePrecision(), device.type == TorchSharp.DeviceType.CUDA);
        cancel.ThrowIfCancellationRequested();
        using var model = LoadedModel.Load(ModelResolver.Resolve(o.Model), device);
        IReadOnlyList<Explanation> results;
        try
        {
            results = new TextExplainer(model).Explain(texts.Select(t => t.Text).ToList(), request);
        }
        catch (AttributionRequestException e) when (TextIndex(e.Field) is int i && i < texts.Count)
        {
            throw new UsageException($"{texts[i].Source}: {e.Message}");
        }
        cancel.ThrowIfCancellationRequested();
        if (html is not null)
        {
            html.Write(() => html.Writer.Write(HtmlReport.Render(results, new HtmlReportOptions
            {
                Model = o.Model ?? DefaultModel.Id,
                Ids = texts.Select(t => t.Id).ToList(),
                DeltaThreshold = o.RelativeThreshold,
            })));
            html.Commit();
        }
        bool color = Output.UseColor;
        int nonFinite = 0;
        for (int i = 0; i < results.Count; i++)
        {
            var e = results[i];
            bool finite = NonFinite.IsFinite(e);
            if (!finite) nonFinite++;
            bool over = OverThreshold(e, o);
            if (o.Json)
            {
                stdout.WriteLine(Output.Line(Output.ExplanationJson(e, texts[i].Id, over)));
                continue;
            }
            stdout.WriteLine($"text       {Terminal.Escape(e.Text)}{(e.Truncated ? "  (truncated)" : "")}");
            stdout.WriteLine($"prediction {Terminal.Escape(e.Prediction.Label)} (p = {e.Prediction.Probability:0.0000})   target {Terminal.Escape(e.TargetLabel)} [{e.Output}]   method {e.Method}/{e.SoftmaxRule}/{e.Precision}");
            if (!finite)
            {
                stdout.WriteLine($"status     non_finite: f(x) {e.Fx:G6}, f(x0) {e.Fx0:G6} or a score is NaN or infinite; these scores mean nothing (check the model's weights and --precision)");
                stdout.WriteLine();
                continue;
            }
            stdout.WriteLine($"f(x) {e.Fx:0.000000}   f(x0) {e.Fx0:0.000000}   delta {e.Delta:E2}   relative delta {e.RelativeDelta:E2}" +
                (over ? $"   WARNING: above the threshold ({ThresholdText(o)}), the scores do not add up" : ""));
            stdout.WriteLine("words      " + Output.ColoredWords(Words.Merge(e), color));
            int width = Math.Max(5, e.Tokens.Max(t => Terminal.Escape(t).Length));
            foreach (var (token, score) in e.Tokens.Zip(e.Scores))
                stdout.WriteLine($"  {Terminal.Escape(token).PadRight(width)} {score,12:+0.000000;-0.000000;0}");
            stdout.WriteLine();
        }
        if (html is not null && !o.Json) stdout.WriteLine($"wrote {Terminal.Escape(o.Html!)}");
        if (nonFinite > 0)
        {
            Parsing.FleetCli.Error.WriteLine($"fleet explain: {nonFinite} of {results.Count} texts have non-finite values (status non_finite)");
            return 1;
        }
        return 0;
    }

    /// <summary>Over either threshold, or not finite (a NaN delta is never within a threshold).</summary>
    public static bool OverThreshold(Explanation e, ExplainOptions o) =>
        !(e.RelativeDelta <= o.RelativeThreshold) || o.DeltaThreshold is { } abs && !(Math.Abs(e.Delta) <= abs);

    private static string ThresholdText(ExplainOptions o) =>
        $"relative {o.RelativeThreshold:G3}" + (o.DeltaThreshold is { } a ? $", absolute {a:G3}" : "");

    /// <summary>The index in a field like <c>texts[3]</c>.</summary>
    internal static int? TextIndex(string? field) =>
        field is not null && field.StartsWith("texts[", StringComparison.Ordinal) && field.EndsWith(']') && int.TryParse(field[6..^1], out var i) ? i : null;
}
