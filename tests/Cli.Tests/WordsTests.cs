using System.Text.Json;
using AttributionFleet.Cli.Parsing;
using AttributionFleet.Cli.Report;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Text;
using Xunit;

namespace AttributionFleet.Cli.Tests;

/// <summary>Words as typed (issue #15 item 6): pieces merged through the character offsets, the same in JSON, terminal and HTML.</summary>
public class WordsTests
{
    private static string Tiny => Path.Combine(TestEnvironment.RepoRoot, "tests", "fixtures", "reference", "tiny-bert-L1");

    private const string Text = "I don't like re-watching it, honestly.";

    [Fact]
    public void ContractionsAndHyphenatedWordsStayWholeAndScoresStillAddUp()
    {
        TestEnvironment.Init();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.True(FleetCli.Run(new[] { "explain", "--model", Tiny, "--json", Text }, stdout, stderr, CancellationToken.None) == 0, stderr.ToString());
        var e = JsonDocument.Parse(stdout.ToString().Trim()).RootElement;
        var tokens = e.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()).ToList();
        Assert.True(tokens.Count > 8, "the tokenizer splits don't and re-watching into pieces");
        var words = e.GetProperty("words").EnumerateArray().ToList();
        Assert.Equal(new[] { "[CLS]", "I", "don't", "like", "re-watching", "it", ",", "honestly", ".", "[SEP]" }, words.Select(w => w.GetProperty("text").GetString()));
        foreach (var w in words.Where(w => !w.GetProperty("special").GetBoolean()))
            Assert.Equal(w.GetProperty("text").GetString(), Text[w.GetProperty("start").GetInt32()..w.GetProperty("end").GetInt32()]);
        double tokenSum = e.GetProperty("scores").EnumerateArray().Sum(s => s.GetDouble());
        double wordSum = words.Sum(w => w.GetProperty("score").GetDouble());
        Assert.Equal(tokenSum, wordSum, 12); // no normalisation: the words' scores add up to the tokens'
        var dont = words.Single(w => w.GetProperty("text").GetString() == "don't");
        Assert.Equal(3, dont.GetProperty("pieces").GetArrayLength());

        // The terminal shows the same words.
        var terminal = new StringWriter();
        Assert.Equal(0, FleetCli.Run(new[] { "explain", "--model", Tiny, Text }, terminal, stderr, CancellationToken.None));
        var line = terminal.ToString().Split('\n').Single(l => l.StartsWith("words", StringComparison.Ordinal));
        Assert.Contains("don't(", line);
        Assert.Contains("re-watching(", line);
    }

    [Fact]
    public void TheHtmlReportUsesTheSameWords()
    {
        var offsets = new[] { (0, 0), (0, 3), (3, 1), (4, 1), (6, 4), (0, 0) };
        var tokens = new[] { "[CLS]", "don", "'", "t", "stop", "[SEP]" };
        var scores = new[] { 0, 0.25, -0.5, 0.125, 1.0, 0 };
        var words = WordSpans.Merge("don't stop", tokens, scores, offsets);
        Assert.Equal(new[] { "[CLS]", "don't", "stop", "[SEP]" }, words.Select(w => w.Text));
        Assert.Equal(-0.125, words[1].Score, 15);
        Assert.Equal(new[] { 1, 2, 3 }, words[1].Pieces);
        Assert.Equal((0, 5), (words[1].Start, words[1].End));
        var display = Words.Merge("don't stop", tokens, scores, offsets);
        Assert.Equal(words.Select(w => w.Text), display.Select(w => w.Text));
        Assert.True(display[2].SpaceBefore);
    }

    [Fact]
    public void ByteLevelPiecesDoNotTakeTheSpaceIntoTheWord()
    {
        // RoBERTa-style offsets that include the leading space of "Ġstop".
        var words = WordSpans.Merge("don't stop", new[] { "<s>", "don", "'t", "Ġstop", "</s>" }, new[] { 0, 1.0, 2.0, 3.0, 0 },
            new[] { (0, 0), (0, 3), (3, 2), (5, 5), (0, 0) });
        Assert.Equal(new[] { "<s>", "don't", "stop", "</s>" }, words.Select(w => w.Text));
        Assert.Equal((6, 10), (words[2].Start, words[2].End));
    }
}
