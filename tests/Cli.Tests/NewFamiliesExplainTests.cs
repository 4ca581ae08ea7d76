using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Cli.Tests;

/// <summary>
/// `fleet explain --model DIR --json` and `--html` on the ModernBERT and DeBERTa-v3 fixtures (tests/fixtures/architectures,
/// issue #12): the same command and output as on BERT, the scores summing to f(x) − f(x0) up to the reported delta.
/// </summary>
public class NewFamiliesExplainTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-cli-families-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("modernbert", "[CLS]", "[SEP]")]
    [InlineData("deberta-v3", "[CLS]", "[SEP]")]
    public void ExplainJsonAndHtmlWorkOnTheFamily(string fixture, string start, string end)
    {
        var model = Path.Combine(TestEnvironment.RepoRoot, "tests", "fixtures", "architectures", fixture);
        var page = Path.Combine(_dir, fixture + ".html");
        var (code, stdout) = TestEnvironment.Run(ExplainCommand.Run, "--model", model, "--precision", "float64", "--json", "--html", page,
            "The plot was dull but the acting was wonderful.", "Bad movie.");
        output.WriteLine(stdout);
        Assert.Equal(0, code);
        var lines = TestEnvironment.JsonLines(stdout);
        Assert.Equal(2, lines.Count);
        foreach (var e in lines)
        {
            var tokens = e.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToArray();
            var scores = e.GetProperty("scores").EnumerateArray().Select(s => s.GetDouble()).ToArray();
            Assert.Equal(start, tokens[0]);
            Assert.Equal(end, tokens[^1]);
            Assert.Equal(tokens.Length, scores.Length);
            double fx = e.GetProperty("f_x").GetDouble(), fx0 = e.GetProperty("f_x0").GetDouble();
            Assert.True(Math.Abs(fx - fx0) > 1e-4);
            Assert.True(e.GetProperty("relative_delta").GetDouble() <= 1e-10, $"relative delta {e.GetProperty("relative_delta").GetDouble():E2}");
            Assert.Equal(fx - fx0, scores.Sum(), 9);
        }
        // The page is written (its token spans depend on the tokenizer: the tiny SentencePiece model splits words).
        var html = File.ReadAllText(page);
        Assert.Contains("<html", html, StringComparison.OrdinalIgnoreCase);
        Assert.Contains(start, html);
    }
}
