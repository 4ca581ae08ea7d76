using System.Text.Json;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Training;
using Xunit;
using Xunit.Abstractions;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Tests;

/// <summary>
/// The embedded default model works out of the box: predict and explain with no --model, exactly; it gives the README's
/// examples their labels and reaches its held-out accuracy; its committed delta is small and checked against its base.
/// </summary>
public class DefaultModelTests(ITestOutputHelper output)
{
    public const string Demo = "The plot was dull but the acting was wonderful.";

    [Fact]
    public void ExplainWithoutModelUsesTheDefaultAndIsExact()
    {
        var (code, stdout) = TestEnvironment.Run(ExplainCommand.Run, "--json", Demo);
        Assert.Equal(0, code);
        var e = Assert.Single(TestEnvironment.JsonLines(stdout));
        output.WriteLine(stdout);
        Assert.Equal(Demo, e.GetProperty("text").GetString());
        var prediction = e.GetProperty("prediction");
        Assert.Equal("positive", prediction.GetProperty("label").GetString());
        Assert.Equal("positive", e.GetProperty("target").GetProperty("label").GetString());

        var tokens = e.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToArray();
        var scores = e.GetProperty("scores").EnumerateArray().Select(s => s.GetDouble()).ToArray();
        Assert.Equal(new[] { "[CLS]", "the", "plot", "was", "dull", "but", "the", "acting", "was", "wonderful", ".", "[SEP]" }, tokens);
        Assert.Equal(tokens.Length, scores.Length);
        Assert.All(scores, s => Assert.True(double.IsFinite(s)));
        double Score(string token) => scores[Array.IndexOf(tokens, token)];
        Assert.True(Score("wonderful") > 0.1, $"'wonderful' should raise 'positive': {Score("wonderful")}");
        Assert.True(Score("dull") < -0.05, $"'dull' should lower 'positive': {Score("dull")}");
        Assert.True(Score("wonderful") == scores.Max(), "'wonderful' is the strongest evidence for 'positive'");

        double fx = e.GetProperty("f_x").GetDouble(), fx0 = e.GetProperty("f_x0").GetDouble();
        double delta = e.GetProperty("delta").GetDouble(), relative = e.GetProperty("relative_delta").GetDouble();
        Assert.Equal(fx - fx0 - scores.Sum(), delta, 6);
        Assert.True(relative <= 1e-5, $"relative delta {relative:E2}");
    }

    [Fact]
    public void PredictWithoutModelUsesTheDefault()
    {
        var (code, stdout) = TestEnvironment.Run(PredictCommand.Run, "--json", "I loved every minute of it.", "Terrible service and cold food.");
        Assert.Equal(0, code);
        var lines = TestEnvironment.JsonLines(stdout);
        Assert.Equal(new[] { "positive", "negative" }, lines.Select(l => l.GetProperty("prediction").GetProperty("label").GetString()));
        Assert.All(lines, l => Assert.Equal(1.0, l.GetProperty("probabilities").EnumerateArray().Sum(p => p.GetDouble()), 9));
    }

    public static TheoryData<string, string> Examples()
    {
        var data = new TheoryData<string, string>();
        foreach (var (text, label) in DefaultModel.Examples) data.Add(text, label);
        return data;
    }

    [Theory]
    [MemberData(nameof(Examples))]
    public void EachReadmeExampleGetsItsLabel(string text, string label)
    {
        var (code, stdout) = TestEnvironment.Run(PredictCommand.Run, "--json", text);
        Assert.Equal(0, code);
        var line = Assert.Single(TestEnvironment.JsonLines(stdout));
        var prediction = line.GetProperty("prediction");
        output.WriteLine($"{prediction.GetProperty("label").GetString()} p={prediction.GetProperty("probability").GetDouble():0.000}: {text}");
        Assert.Equal(label, prediction.GetProperty("label").GetString());
    }

    [Fact]
    public void TheCommittedModelReachesItsHeldOutAccuracy()
    {
        // Inference only, through the assembled model folder, on the test set that training never saw.
        var rows = HeadTrainer.ReadJsonl(Path.Combine(TestEnvironment.DataDir, "test.jsonl"));
        TestEnvironment.Init();
        using var model = LoadedModel.Load(DefaultModel.EnsureFolder(), TorchSharp.torch.CPU);
        IReadOnlyList<PredictionResult> predictions;
        lock (TestEnvironment.EncoderGate) predictions = new TextExplainer(model).Predict(rows.Select(r => r.Text).ToList());
        int correct = rows.Zip(predictions).Count(p => p.First.Label == p.Second.Prediction.Label);
        double accuracy = (double)correct / rows.Count;
        output.WriteLine($"held-out accuracy {accuracy:0.0000} ({correct} of {rows.Count})");
        Assert.True(rows.Count >= 300, $"{rows.Count} test texts");
        Assert.True(accuracy >= 0.92, $"held-out accuracy {accuracy:0.0000}");
        // delta.json records what train-default measured; recomputing gives the same (±1 text for float differences between CPUs).
        using var info = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestEnvironment.HeadDir, EncoderDelta.InfoFile)));
        Assert.Equal(info.RootElement.GetProperty("test_accuracy").GetDouble(), accuracy, 1.0 / rows.Count + 1e-4);
        Assert.Equal(rows.Count, info.RootElement.GetProperty("test_examples").GetInt32());
        Assert.Equal(HeadTrainer.Sha256(Path.Combine(TestEnvironment.DataDir, "test.jsonl")), info.RootElement.GetProperty("test_sha256").GetString());
    }

    [Fact]
    public void TheCommittedDeltaIsSmallAndFineTunesTheEncoder()
    {
        var path = Path.Combine(TestEnvironment.HeadDir, EncoderDelta.WeightsFile);
        Assert.True(new FileInfo(path).Length < 1024 * 1024, $"{path}: {new FileInfo(path).Length} bytes");
        Assert.False(File.Exists(Path.Combine(TestEnvironment.HeadDir, HeadTrainer.WeightsFile)), "a head beside the delta is refused");
        using var delta = EncoderDelta.Load(TestEnvironment.HeadDir);
        Assert.Equal(new[] { "negative", "positive" }, delta.Labels);
        Assert.NotEmpty(delta.Layers);
        foreach (int layer in delta.Layers)
            foreach (var map in EncoderDelta.Maps)
                Assert.True(delta.Tensors[EncoderDelta.LoraB(layer, map)].abs().max().item<float>() > 0, $"layer {layer} {map}: B is still zero");
        // The delta belongs to the packaged encoder's weights (the import is deterministic).
        TestEnvironment.Init();
        delta.CheckBase(Path.Combine(MiniLmAssets.EnsureImported(), "model.safetensors"), path);
    }

    [Fact]
    public void ADeltaForOtherWeightsOrBesideAHeadIsRefused()
    {
        TestEnvironment.Init();
        var encoderDir = MiniLmAssets.EnsureImported();
        var dir = Directory.CreateTempSubdirectory("fleet-delta-refused-").FullName;
        try
        {
            using (var committed = EncoderDelta.Load(TestEnvironment.HeadDir))
            using (var other = new EncoderDelta(committed.Layers, committed.Labels, committed.Rank, new string('0', 64), committed.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.clone())))
                other.Save(Path.Combine(dir, "other"), new Dictionary<string, object?>());
            var e = Assert.Throws<AttributionFleet.Engine.ModelLoadException>(() => DefaultModel.Build(encoderDir, Path.Combine(dir, "other"), Path.Combine(dir, "out1")));
            Assert.Equal("base_sha256", e.Field);
            Assert.Contains("fleet train-default", e.Message);

            var both = Path.Combine(dir, "both");
            Directory.CreateDirectory(both);
            foreach (var f in Directory.EnumerateFiles(TestEnvironment.HeadDir)) File.Copy(f, Path.Combine(both, Path.GetFileName(f)));
            File.WriteAllText(Path.Combine(both, HeadTrainer.WeightsFile), "");
            e = Assert.Throws<AttributionFleet.Engine.ModelLoadException>(() => DefaultModel.Build(encoderDir, both, Path.Combine(dir, "out2")));
            Assert.Contains("both", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void TheDefaultFolderIsACompleteModelBuiltOnce()
    {
        TestEnvironment.Init();
        var folder = ModelResolver.Resolve(null);
        Assert.Equal(folder, ModelResolver.Resolve(DefaultModel.Id));
        Assert.Equal(DefaultModel.Folder, folder);
        Assert.StartsWith(MiniLmAssets.CacheRoot, folder);
        foreach (var file in new[] { "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", DefaultModel.StampFile })
            Assert.True(File.Exists(Path.Combine(folder, file)), file);
        var config = ModelConfig.Load(Path.Combine(folder, "config.json"));
        Assert.Equal("MeanPoolingClassifier", config.Architecture);
        Assert.Equal(new[] { "negative", "positive" }, config.Labels);
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "config.json"))))
            Assert.Equal(1, doc.RootElement.GetProperty("label2id").GetProperty("positive").GetInt32());
        using (var weights = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
        {
            Assert.Equal(new long[] { 2, 384 }, weights.Entries["classifier.weight"].Shape);
            Assert.Equal(new long[] { 2 }, weights.Entries["classifier.bias"].Shape);
        }
        // The stamp names the committed delta by SHA-256: a new delta means a new stamp, so the folder is rebuilt.
        Assert.Contains(HeadTrainer.Sha256(Path.Combine(DefaultModel.HeadDir, EncoderDelta.WeightsFile)), File.ReadAllText(Path.Combine(folder, DefaultModel.StampFile)));
        // A second call reuses the folder instead of rebuilding it.
        var written = File.GetLastWriteTimeUtc(Path.Combine(folder, "model.safetensors"));
        Assert.Equal(folder, DefaultModel.EnsureFolder());
        Assert.Equal(written, File.GetLastWriteTimeUtc(Path.Combine(folder, "model.safetensors")));
    }

    [Fact]
    public void TheHeadIsFoundNextToTheExecutable()
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "models", DefaultModel.Id);
        Assert.True(File.Exists(Path.Combine(beside, EncoderDelta.WeightsFile)), "the build copies the delta next to the executable");
        Assert.Equal(Path.GetFullPath(beside), Path.GetFullPath(DefaultModel.HeadDir));
    }
}
