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

    [Theory]
    [InlineData("lots")]
    [InlineData("1.5")]
    [InlineData("-0.1")]
    public void ABadWeakReferenceThresholdIsAUsageError(string value)
    {
        var (exit, stdout, stderr) = Fleet("explain", "--model", Path.Combine(_dir, "model"), "--weak-reference-threshold", value, "x");
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.Contains("--weak-reference-threshold", stderr);
    }

    [Fact]
    public void SubmitCarriesTargetAllFaithfulnessAndTheWeakThresholdToTheFleet()
    {
        var input = Path.Combine(_dir, "in.txt");
        File.WriteAllLines(input, new[] { "tok1001 tok1002 tok1003", "tok1010 tok1011" });
        var output = Path.Combine(_dir, "out.jsonl");
        var (exit, _, stderr) = Fleet("submit", "--transport", "inmemory", "--model", "three", "--model-path", Path.Combine(_dir, "model"),
            "--input", input, "--out", output, "--timeout", "120", "--target", "all", "--faithfulness", "--weak-reference-threshold", "0.5",
            "--precision", "float64");
        Assert.True(exit == 0, stderr);
        var lines = File.ReadAllLines(output).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(2, lines.Count);
        foreach (var line in lines)
        {
            Assert.Equal("ok", line.GetProperty("status").GetString());
            Assert.Equal(3, line.GetProperty("classes").GetArrayLength());
            Assert.Equal(4, line.GetProperty("faithfulness").GetProperty("comprehensiveness").GetArrayLength());
            double change = line.GetProperty("probability_change").GetDouble();
            Assert.Equal(Math.Abs(change) < 0.5, line.GetProperty("weak_reference").GetBoolean());
        }
    }

    [Fact]
    public void NonFiniteResultsAreNullsInEveryClassRowAndTheReportCountsThem()
    {
        var nan = NanModel.Create(_dir);
        var (exit, stdout, stderr) = Fleet("explain", "--model", nan, "--json", "--target", "all", "--faithfulness", "hello world", "good");
        Assert.Equal(1, exit);
        Assert.Contains("non-finite", stderr);
        Assert.DoesNotContain("NaN", stdout);
        Assert.DoesNotContain("Infinity", stdout);
        var lines = TestEnvironment.JsonLines(stdout);
        Assert.Equal(2, lines.Count);
        foreach (var line in lines)
        {
            Assert.Equal("non_finite", line.GetProperty("status").GetString());
            Assert.Equal(System.Text.Json.JsonValueKind.Null, line.GetProperty("weak_reference").ValueKind);
            Assert.Equal(System.Text.Json.JsonValueKind.Null, line.GetProperty("probability_change").ValueKind);
            var classes = line.GetProperty("classes").EnumerateArray().ToList();
            Assert.NotEmpty(classes);
            Assert.All(classes, c =>
            {
                Assert.Equal(System.Text.Json.JsonValueKind.Null, c.GetProperty("f_x").ValueKind);
                Assert.Equal(System.Text.Json.JsonValueKind.Null, c.GetProperty("delta").ValueKind);
                Assert.Equal(System.Text.Json.JsonValueKind.Null, c.GetProperty("weak_reference").ValueKind);
                Assert.Equal(System.Text.Json.JsonValueKind.Null, c.GetProperty("probability_change").ValueKind);
            });
        }
        var results = Path.Combine(_dir, "nan.jsonl");
        File.WriteAllText(results, stdout);
        var page = Path.Combine(_dir, "nan.html");
        var (reportExit, reported, reportErr) = Fleet("report", results, "--html", page);
        Assert.True(reportExit == 0, reportErr);
        Assert.Contains("2 non-finite", reported);
        Assert.Matches("<div class=\"v\">2</div><div class=\"note\">non-finite", File.ReadAllText(page));
        Assert.All(JobResults.Read(results), r => Assert.True(r.NonFinite));
    }

    [Fact]
    public void RegressionAndMultiLabelHeadsWithTargetAllAndTheReport()
    {
        var regression = Path.Combine(TestEnvironment.RepoRoot, "tests", "fixtures", "architectures", "bert-regression");
        var (exit, stdout, stderr) = Fleet("explain", "--model", regression, "--json", "--target", "all", "--faithfulness", "the acting was wonderful", "dull");
        Assert.True(exit == 0, stderr);
        Assert.DoesNotContain("NaN", stdout);
        foreach (var line in TestEnvironment.JsonLines(stdout))
        {
            Assert.Equal("ok", line.GetProperty("status").GetString());
            Assert.Equal("regression", line.GetProperty("prediction").GetProperty("head").GetString());
            Assert.Equal(System.Text.Json.JsonValueKind.Null, line.GetProperty("prediction").GetProperty("probability").ValueKind);
            Assert.Equal(System.Text.Json.JsonValueKind.Null, line.GetProperty("weak_reference").ValueKind);
            Assert.Equal(System.Text.Json.JsonValueKind.Null, line.GetProperty("probability_change").ValueKind);
            Assert.All(line.GetProperty("classes").EnumerateArray(), c =>
            {
                Assert.Equal(System.Text.Json.JsonValueKind.Null, c.GetProperty("weak_reference").ValueKind);
                Assert.Equal(System.Text.Json.JsonValueKind.Null, c.GetProperty("probability_change").ValueKind);
                Assert.Equal(System.Text.Json.JsonValueKind.Number, c.GetProperty("f_x").ValueKind);
            });
            Assert.Equal(System.Text.Json.JsonValueKind.Number, line.GetProperty("faithfulness").GetProperty("aopc_deletion").ValueKind);
        }
        var results = Path.Combine(_dir, "regression.jsonl");
        File.WriteAllText(results, stdout);
        var rows = JobResults.Read(results);
        Assert.All(rows, r =>
        {
            Assert.False(r.NonFinite);
            Assert.Null(r.Probability);
            Assert.NotNull(r.Value);
        });
        var page = Path.Combine(_dir, "regression.html");
        Assert.Equal(0, Fleet("report", results, "--html", page).Exit);
        Assert.Contains("\"pr\":null,\"v\":", File.ReadAllText(page));

        var multi = Path.Combine(TestEnvironment.RepoRoot, "tests", "fixtures", "architectures", "bert-multi-label");
        var (multiExit, multiOut, multiErr) = Fleet("explain", "--model", multi, "--json", "--target", "all", "the acting was wonderful");
        Assert.True(multiExit == 0, multiErr);
        var m = TestEnvironment.JsonLines(multiOut).Single();
        Assert.Equal("logit", m.GetProperty("output").GetString());
        Assert.All(m.GetProperty("classes").EnumerateArray(), c =>
            Assert.Equal(Math.Abs(c.GetProperty("probability_change").GetDouble()) < 0.05, c.GetProperty("weak_reference").GetBoolean()));
    }

    private static (int Exit, string Stdout, string Stderr) Fleet(params string[] args)
    {
        TestEnvironment.Init();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = AttributionFleet.Cli.Parsing.FleetCli.Run(args, stdout, stderr, CancellationToken.None);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
