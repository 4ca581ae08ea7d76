using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Training;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Tests;

/// <summary>
/// The committed data, and the trainers behind the default model: fine-tuning (<see cref="EncoderFineTuner"/>, the
/// default model's delta) and the frozen-encoder head (<see cref="HeadTrainer"/>) are deterministic, and the merged
/// checkpoint computes what training computed.
/// </summary>
public class HeadTrainingTests(ITestOutputHelper output)
{
    private static readonly string[] Labels = { "negative", "positive" };

    private static List<LabeledText> Read(string name) => HeadTrainer.ReadJsonl(Path.Combine(TestEnvironment.DataDir, name + ".jsonl"));

    [Fact]
    public void TheSplitsAreDisjointBalancedAndLargeEnough()
    {
        var sets = new[] { "train", "validation", "test" }.ToDictionary(n => n, Read);
        Assert.True(sets["test"].Count >= 300, $"{sets["test"].Count} test texts");
        Assert.True(sets["validation"].Count >= 150, $"{sets["validation"].Count} validation texts");
        Assert.True(sets["train"].Count >= 1000, $"{sets["train"].Count} training texts");
        foreach (var (name, set) in sets)
        {
            Assert.All(set, r => Assert.Contains(r.Label, Labels));
            int positive = set.Count(r => r.Label == "positive");
            Assert.True(Math.Abs(2 * positive - set.Count) <= set.Count / 50, $"{name}: {positive} positive of {set.Count}");
        }
        var all = sets.Values.SelectMany(s => s).Select(r => r.Text.Trim().ToLowerInvariant()).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        // The README's examples are checked separately: none of them is in any split.
        foreach (var (text, _) in DefaultModel.Examples) Assert.DoesNotContain(text.Trim().ToLowerInvariant(), all);
        // Harder cases are there: very short texts, negations, sarcasm-like "Great, ..." openings, contrasts.
        Assert.True(sets["train"].Count(r => r.Text.Split(' ').Length <= 2) >= 80);
        Assert.True(sets["train"].Count(r => r.Text.Contains("not ", StringComparison.OrdinalIgnoreCase) || r.Text.Contains("n't", StringComparison.Ordinal)) >= 80);
        Assert.True(sets["test"].Count(r => r.Text.Split(' ').Length <= 2) >= 30);
    }

    /// <summary>24 training texts, half of each label: enough to train on in a second or two.</summary>
    private static List<LabeledText> Subset() =>
        Read("train").Where(r => r.Label == "positive").Take(12).Concat(Read("train").Where(r => r.Label == "negative").Take(12)).ToList();

    private static readonly FineTuneOptions Small = new() { TrainedLayers = 1, Rank = 2, Epochs = 2, BatchSize = 8, Seed = 7 };

    private static (EncoderDelta Delta, List<EpochReport> Epochs) FineTune(List<LabeledText> rows, FineTuneOptions options)
    {
        lock (TestEnvironment.EncoderGate)
        {
            using var tuner = new EncoderFineTuner(TestEnvironment.Encoder, Labels, options);
            using var data = tuner.Prepare(rows);
            var epochs = tuner.Train(data);
            return (tuner.ToDelta("0000"), epochs);
        }
    }

    [Fact]
    public void FineTuningIsReproducibleToTheByte()
    {
        var rows = Subset();
        var dir = Directory.CreateTempSubdirectory("fleet-delta-").FullName;
        try
        {
            var files = new List<byte[]>();
            for (int run = 0; run < 2; run++)
            {
                var (delta, epochs) = FineTune(rows, Small);
                using (delta)
                {
                    output.WriteLine(string.Join("; ", epochs.Select(e => $"epoch {e.Epoch} loss {e.MeanLoss:0.000000}")));
                    var target = Path.Combine(dir, $"run{run}");
                    delta.Save(target, new Dictionary<string, object?>());
                    files.Add(File.ReadAllBytes(Path.Combine(target, EncoderDelta.WeightsFile)));
                    // Training moved the factors off their zero start.
                    Assert.True(delta.Tensors[EncoderDelta.LoraB(5, "output")].abs().max().item<float>() > 0);
                    Assert.Equal(2, epochs.Count);
                }
            }
            Assert.Equal(files[0], files[1]);
            // Another seed gives other bytes (the seed is used, not ignored).
            var (other, _) = FineTune(rows, Small with { Seed = 8 });
            using (other)
            {
                other.Save(Path.Combine(dir, "other"), new Dictionary<string, object?>());
                Assert.NotEqual(files[0], File.ReadAllBytes(Path.Combine(dir, "other", EncoderDelta.WeightsFile)));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void TheMergedCheckpointComputesWhatTrainingComputed()
    {
        var rows = Subset();
        lock (TestEnvironment.EncoderGate)
        {
            using var scope = NewDisposeScope();
            using var tuner = new EncoderFineTuner(TestEnvironment.Encoder, Labels, Small with { TrainedLayers = 2 });
            using var data = tuner.Prepare(rows);
            var epochs = tuner.Train(data);
            Assert.True(epochs[^1].MeanLoss < Math.Log(2), $"loss {epochs[^1].MeanLoss} (log 2 = {Math.Log(2):0.0000} at the zero start)");
            float[] trained;
            using (no_grad()) trained = tuner.Forward(data, Enumerable.Range(0, rows.Count).ToList()).contiguous().data<float>().ToArray();
            using var delta = tuner.ToDelta("0000");
            var merged = delta.Apply(TestEnvironment.Encoder.Float32);
            var explainer = new TextExplainer(TestEnvironment.Encoder);
            var tokenized = explainer.Tokenize(rows.Select(r => r.Text).ToList());
            double worst = 0;
            for (int i = 0; i < rows.Count; i++)
            {
                var ids = tensor(tokenized[i].Ids.Select(x => (long)x).ToArray(), dtype: ScalarType.Int64).unsqueeze(0);
                var logits = merged.Logits(ids, ones_like(ids)).data<float>().ToArray();
                for (int c = 0; c < 2; c++) worst = Math.Max(worst, Math.Abs(logits[c] - trained[i * 2 + c]));
            }
            output.WriteLine($"max |logit(merged checkpoint) − logit(training forward)| = {worst:E2}");
            Assert.True(worst < 1e-4, $"the merged checkpoint's logits differ from the training forward's by {worst:E2}");
        }
    }

    [Fact]
    public void TrainDefaultTrainsOnASubsetAndReportsTheHeldOutAccuracy()
    {
        var dir = Directory.CreateTempSubdirectory("fleet-train-default-").FullName;
        try
        {
            int code;
            string stdout;
            // --threads as they are: libtorch's thread count is process-wide and other tests run beside this one.
            lock (TestEnvironment.EncoderGate)
                (code, stdout) = TestEnvironment.Run(Commands.TrainDefaultCommand.Run, "--limit", "8", "--epochs", "1", "--layers", "1", "--rank", "1",
                    "--threads", get_num_threads().ToString(), "--out", dir);
            output.WriteLine(stdout);
            Assert.Equal(0, code);
            Assert.Contains("epoch 1: loss ", stdout);
            Assert.Matches(@"held-out accuracy 0\.\d{4} on \d+ texts", stdout);
            using var delta = EncoderDelta.Load(dir);
            Assert.Equal(new[] { 5 }, delta.Layers);
            Assert.Equal(1, delta.Rank);
            using var info = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, EncoderDelta.InfoFile)));
            Assert.Equal(16, info.RootElement.GetProperty("train_examples").GetInt32());
            Assert.InRange(info.RootElement.GetProperty("test_accuracy").GetDouble(), 0, 1);

            // Bad input is one usage error naming what is wrong.
            var e = Assert.Throws<UsageException>(() => Commands.TrainDefaultCommand.Run(new[] { "--data", Path.Combine(dir, "missing") }, new StringWriter()));
            Assert.Contains("missing", e.Message);
            Assert.Throws<UsageException>(() => Commands.TrainDefaultCommand.Run(new[] { "--rank", "0" }, new StringWriter()));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void HeadTrainingIsDeterministic()
    {
        var subset = Subset();
        var options = new HeadTrainingOptions { Epochs = 100 };
        TrainedHead Once()
        {
            float[][] x;
            lock (TestEnvironment.EncoderGate) x = HeadTrainer.Embed(TestEnvironment.Encoder, subset.Select(r => r.Text).ToList(), options);
            return HeadTrainer.Train(x, HeadTrainer.LabelIndices(subset, Labels), Labels, options).Head;
        }
        var a = Once();
        var b = Once();
        for (int c = 0; c < 2; c++) Assert.Equal(a.Weight[c], b.Weight[c]);
        Assert.Equal(a.Bias, b.Bias);
        Assert.Contains(a.Weight[1], w => w != 0);

        // And it round-trips through head.safetensors/head.json unchanged.
        var dir = Directory.CreateTempSubdirectory("fleet-head-").FullName;
        try
        {
            HeadTrainer.Save(a, dir, new Dictionary<string, object?> { ["note"] = "test" });
            var loaded = HeadTrainer.Load(dir);
            for (int c = 0; c < 2; c++) Assert.Equal(a.Weight[c], loaded.Weight[c]);
            Assert.Equal(a.Bias, loaded.Bias);
            Assert.Equal(Labels, loaded.Labels);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
