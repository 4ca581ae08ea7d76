using System.Text.Json;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Training;
using Xunit;
using Xunit.Abstractions;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Tests;

/// <summary>The committed head against the committed data; the trainer is deterministic.</summary>
public class HeadTrainingTests(ITestOutputHelper output)
{
    [Fact]
    public void CommittedHeadReachesTheHeldOutAccuracy()
    {
        var head = HeadTrainer.Load(TestEnvironment.HeadDir);
        Assert.Equal(new[] { "negative", "positive" }, head.Labels);
        var (rows, x) = TestEnvironment.Test;
        var y = HeadTrainer.LabelIndices(rows, head.Labels);
        double accuracy = head.Accuracy(x, y);
        output.WriteLine($"held-out accuracy {accuracy:0.0000} on {rows.Count} texts");
        Assert.True(rows.Count >= 100, $"{rows.Count} test texts");
        Assert.True(accuracy >= 0.85, $"held-out accuracy {accuracy:0.0000}");
        // head.json records what train-head measured; recomputing gives the same (±1 text for float differences between CPUs).
        using var info = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestEnvironment.HeadDir, HeadTrainer.InfoFile)));
        Assert.Equal(info.RootElement.GetProperty("test_accuracy").GetDouble(), accuracy, 1.0 / rows.Count + 1e-9);
        Assert.Equal(rows.Count, info.RootElement.GetProperty("test_examples").GetInt32());
    }

    [Fact]
    public void DataIsBalancedAndTheSplitHasNoDuplicates()
    {
        var train = HeadTrainer.ReadJsonl(Path.Combine(TestEnvironment.DataDir, "train.jsonl"));
        var test = HeadTrainer.ReadJsonl(Path.Combine(TestEnvironment.DataDir, "test.jsonl"));
        Assert.True(train.Count + test.Count >= 600);
        Assert.InRange((double)test.Count / (train.Count + test.Count), 0.15, 0.25);
        foreach (var set in new[] { train, test })
        {
            Assert.All(set, r => Assert.Contains(r.Label, new[] { "negative", "positive" }));
            Assert.Equal(set.Count(r => r.Label == "positive"), set.Count(r => r.Label == "negative"));
        }
        var all = train.Concat(test).Select(r => r.Text.Trim().ToLowerInvariant()).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
    }

    [Fact]
    public void TheDefaultModelAgreesWithTheHeadOnEmbeddings()
    {
        TestEnvironment.Init();
        var head = HeadTrainer.Load(TestEnvironment.HeadDir);
        var (rows, x) = TestEnvironment.Test;
        var texts = rows.Take(16).Select(r => r.Text).ToList();
        using var model = LoadedModel.Load(DefaultModel.EnsureFolder(), TorchSharp.torch.CPU);
        var predictions = new TextExplainer(model).Predict(texts);
        for (int i = 0; i < texts.Count; i++)
            Assert.Equal(head.Labels[head.Predict(x[i])], predictions[i].Prediction.Label);
    }

    [Fact]
    public void TrainingIsDeterministic()
    {
        var train = HeadTrainer.ReadJsonl(Path.Combine(TestEnvironment.DataDir, "train.jsonl"));
        var subset = train.Where(r => r.Label == "positive").Take(12).Concat(train.Where(r => r.Label == "negative").Take(12)).ToList();
        var labels = new[] { "negative", "positive" };
        var options = new HeadTrainingOptions { Epochs = 100 };
        TrainedHead Once()
        {
            float[][] x;
            lock (TestEnvironment.EncoderGate) x = HeadTrainer.Embed(TestEnvironment.Encoder, subset.Select(r => r.Text).ToList(), options);
            return HeadTrainer.Train(x, HeadTrainer.LabelIndices(subset, labels), labels, options).Head;
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
            Assert.Equal(labels, loaded.Labels);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
