using AttributionFleet.Engine.Text;

namespace AttributionFleet.Cli.Commands;

/// <summary><c>fleet predict [--model DIR] [--json] [--input FILE] "text" …</c></summary>
public static class PredictCommand
{
    public const string Usage = "fleet predict [--model DIR|sentiment-minilm] [--json] [--batch-size N] [--max-length N] [--input texts.txt|texts.jsonl] [\"text\" ...]";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "model", "input", "batch-size", "max-length", "device" }, new[] { "json" });
        var texts = TextInput.Read(cl);
        using var model = LoadedModel.Load(ModelResolver.Resolve(cl.Value("model")), DeviceSelector.Resolve(cl.Value("device")));
        var explainer = new TextExplainer(model);
        var results = explainer.Predict(texts.Select(t => t.Text).ToList(), cl.Int("batch-size", 32), cl.Value("max-length") is null ? null : cl.Int("max-length", 0));
        for (int i = 0; i < results.Count; i++)
        {
            var r = results[i];
            if (cl.Flag("json")) stdout.WriteLine(Output.Line(Output.PredictionJson(r, texts[i].Id)));
            else stdout.WriteLine($"{PredictionText.Describe(r, model.Config.Labels)}{(r.Truncated ? "  (truncated)" : "")}  {r.Text}");
        }
        return 0;
    }
}
