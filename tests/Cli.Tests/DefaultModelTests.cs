using System.Text.Json;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Checkpoints;
using Xunit;
using Xunit.Abstractions;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Tests;

/// <summary>The embedded default model works out of the box: predict and explain with no --model.</summary>
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
        Assert.InRange(prediction.GetProperty("probability").GetDouble(), 0.5, 1.0);
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
        // A second call reuses the folder instead of rebuilding it.
        var written = File.GetLastWriteTimeUtc(Path.Combine(folder, "model.safetensors"));
        Assert.Equal(folder, DefaultModel.EnsureFolder());
        Assert.Equal(written, File.GetLastWriteTimeUtc(Path.Combine(folder, "model.safetensors")));
    }

    [Fact]
    public void TheHeadIsFoundNextToTheExecutable()
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "models", DefaultModel.Id);
        Assert.True(File.Exists(Path.Combine(beside, "head.safetensors")), "the build copies the head next to the executable");
        Assert.Equal(Path.GetFullPath(beside), Path.GetFullPath(DefaultModel.HeadDir));
    }
}
