using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Report;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Models;
using Xunit;

namespace AttributionFleet.Cli.Tests;

/// <summary><c>fleet explain --json --target all --faithfulness</c> end to end on a small 3-label model, then <c>fleet report</c> on its output.</summary>
public sealed class ExplainEveryTargetCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fleet-cli-3label-").FullName;

    public ExplainEveryTargetCommandTests()
    {
        var config = RandomModels.BertConfig(layers: 1, hidden: 32, heads: 4, intermediate: 64, vocab: 1200, labels: 3, maxPositions: 64)
            with { Labels = new List<string> { "negative", "neutral", "positive" } };
        using var model = RandomModels.Create(config, seed: 4, std: 0.5, stress: true);
        RandomModels.Save(model, Path.Combine(_dir, "model"));
    }

    [Fact]
    public void JsonCarriesEveryClassTheReferenceCheckAndFaithfulnessAndTheReportReadsIt()
    {
        var stdout = new StringWriter();
        int code = ExplainCommand.Run(new[] { "--model", Path.Combine(_dir, "model"), "--json", "--target", "all", "--faithfulness",
            "--weak-reference-threshold", "0.01", "tok1001 tok1002 tok1003", "tok1010 tok1011" }, stdout);
        Assert.Equal(0, code);
        var lines = TestEnvironment.JsonLines(stdout.ToString());
        Assert.Equal(2, lines.Count);
        foreach (var line in lines)
        {
            var classes = line.GetProperty("classes").EnumerateArray().ToList();
            Assert.Equal(new[] { "negative", "neutral", "positive" }, classes.Select(c => c.GetProperty("target").GetProperty("label").GetString()));
            int predicted = line.GetProperty("prediction").GetProperty("index").GetInt32();
            Assert.Equal(predicted, line.GetProperty("target").GetProperty("index").GetInt32());
            Assert.Equal(line.GetProperty("scores").GetRawText(), classes[predicted].GetProperty("scores").GetRawText());
            // float32: every class adds up, the last one too (its multipliers are minus the sum of the others').
            Assert.All(classes, c => Assert.InRange(Math.Abs(c.GetProperty("delta").GetDouble()), 0, 1e-4));
            double change = line.GetProperty("probability_change").GetDouble();
            Assert.Equal(Math.Abs(change) < 0.01, line.GetProperty("weak_reference").GetBoolean());
            var f = line.GetProperty("faithfulness");
            Assert.Equal(4, f.GetProperty("comprehensiveness").GetArrayLength());
            Assert.True(f.GetProperty("perturbed_inputs").GetInt32() >= 2);
        }

        var results = Path.Combine(_dir, "results.jsonl");
        File.WriteAllText(results, stdout.ToString());
        var page = Path.Combine(_dir, "report.html");
        Assert.Equal(0, ReportCommand.Run(new[] { results, "--html", page }, TextWriter.Null));
        var html = File.ReadAllText(page);
        foreach (var label in new[] { "negative", "neutral", "positive" }) Assert.Contains($"<h3>class <bdi>{label}</bdi></h3>", html);
        Assert.Contains("Faithfulness (2 texts)", html);
    }

    [Fact]
    public void ABadWeakReferenceThresholdIsAUsageError()
    {
        var e = Assert.Throws<UsageException>(() => ExplainCommand.Run(new[] { "--model", Path.Combine(_dir, "model"), "--weak-reference-threshold", "lots", "x" }, TextWriter.Null));
        Assert.Contains("--weak-reference-threshold", e.Message);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
