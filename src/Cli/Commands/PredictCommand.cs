using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet predict</c>.</summary>
public sealed record PredictOptions(string? Model, string? Device, bool Json, int BatchSize, int? MaxLength, string? Input, IReadOnlyList<string> Texts);

/// <summary><c>fleet predict [--model DIR] [--json] [--input FILE] "text" …</c></summary>
public static class PredictCommand
{
    /// <summary>The command-line form (tests, scripts): parsed as <c>fleet predict ARGS</c>, errors printed and mapped to exit codes.</summary>
    public static int Run(string[] args, TextWriter stdout) => Parsing.FleetCli.Run(["predict", .. args], stdout, Console.Error, CancellationToken.None);

    public const string Description = "Print each text's predicted label and probabilities.";

    /// <summary>Exit 0, or 1 when a text's logits are not finite (flagged in the output; the numbers mean nothing).</summary>
    public static int Run(PredictOptions o, TextWriter stdout, CancellationToken cancel = default)
    {
        var texts = TextInput.Read(o.Texts, o.Input);
        using var model = LoadedModel.Load(ModelResolver.Resolve(o.Model), DeviceSelector.Resolve(o.Device));
        cancel.ThrowIfCancellationRequested();
        IReadOnlyList<PredictionResult> results;
        try
        {
            results = new TextExplainer(model).Predict(texts.Select(t => t.Text).ToList(), o.BatchSize, o.MaxLength);
        }
        catch (Engine.Attribution.AttributionRequestException e) when (ExplainCommand.TextIndex(e.Field) is int i && i < texts.Count)
        {
            throw new UsageException($"{texts[i].Source}: {e.Message}");
        }
        int nonFinite = 0;
        for (int i = 0; i < results.Count; i++)
        {
            var r = results[i];
            bool finite = NonFinite.IsFinite(r);
            if (!finite) nonFinite++;
            if (o.Json)
            {
                stdout.WriteLine(Output.Line(Output.PredictionJson(r, texts[i].Id)));
                continue;
            }
            if (!finite)
            {
                stdout.WriteLine($"{"non_finite",-12} logits [{string.Join(", ", r.Logits.Select(l => l.ToString("G6")))}]: NaN or infinite, no prediction  {Terminal.Escape(r.Text)}");
                continue;
            }
            stdout.WriteLine($"{Terminal.Escape(PredictionText.Describe(r, model.Config.Labels))}{(r.Truncated ? "  (truncated)" : "")}  {Terminal.Escape(r.Text)}");
        }
        if (nonFinite > 0)
        {
            Parsing.FleetCli.Error.WriteLine($"fleet predict: {nonFinite} of {results.Count} texts have non-finite logits (status non_finite)");
            return 1;
        }
        return 0;
    }
}
