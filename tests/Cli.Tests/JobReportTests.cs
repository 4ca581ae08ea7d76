using System.Diagnostics;
using System.Text.RegularExpressions;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Report;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Text;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Cli.Tests;

/// <summary><c>fleet report</c>: the job report read from both results formats, its summary, and the page in headless Chromium.</summary>
public class JobReportTests(ITestOutputHelper output)
{
    private static string ExplainLine(string text, double relativeDelta = 1e-7, string label = "positive", double probability = 0.8) =>
        Output.Line(Output.ExplanationJson(HtmlReportTests.Synthetic(text, relativeDelta) with { Prediction = new Prediction(label, label == "positive" ? 1 : 0, probability) }));

    /// <summary>A fleet result line (fleet submit --out / fleet results --out) for the same synthetic explanation.</summary>
    private static string FleetLine(string id, string text, double delta = 1e-9)
    {
        var e = HtmlReportTests.Synthetic(text);
        return Output.Line(Output.AttributionJson(new TextAttribution
        {
            Id = id, Text = e.Text, Tokens = e.Tokens, Scores = e.Scores,
            Prediction = new PredictedLabel { Label = "negative", Index = 0, Probability = 0.7 },
            TargetIndex = 0, TargetLabel = "negative", Output = e.Output, Fx = e.Fx, Fx0 = e.Fx0, Delta = delta,
            RelativeDelta = delta / (e.Fx - e.Fx0), Method = "deeplift", SoftmaxRule = "exact", Precision = "float32",
        }));
    }

    private static string Temp(string name, params string[] lines)
    {
        var dir = Directory.CreateTempSubdirectory("fleet-jobreport-").FullName;
        var path = Path.Combine(dir, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void BothResultFormatsAndWordsArraysAreRead()
    {
        var withWords = """
            {"id":"w1","text":"can't stop","tokens":["[CLS]","can","'","t","stop","[SEP]"],"scores":[0,0.1,0.2,0.3,-0.5,0],
             "words":[{"text":"can't","start":0,"end":5,"score":0.6,"pieces":[1,2,3]},{"text":"stop","start":6,"end":10,"score":-0.5,"pieces":[4]}],
             "prediction":{"label":"positive","index":1,"probability":0.9},"target":{"label":"positive","index":1},"delta":1e-9,"relative_delta":1e-8,
             "over_threshold":true,"weak_reference":true,"faithfulness":{"comprehensiveness_mean":0.3,"sufficiency_mean":0.1,"aopc_deletion":0.2,"aopc_insertion":0.4}}
            """.ReplaceLineEndings("");
        var path = Temp("mixed.jsonl", ExplainLine("the acting was wonderful"), "", FleetLine("f-7", "cold food"), withWords);
        var rows = JobResults.Read(path);
        Assert.Equal(3, rows.Count);
        Assert.Equal("1", rows[0].Id);
        Assert.Equal(new[] { "the", "acting", "was", "wonderful" }, rows[0].Words.Select(w => w.Text));
        Assert.Equal("f-7", rows[1].Id);
        Assert.Equal("negative", rows[1].Label);
        Assert.Equal(new[] { "can't", "stop" }, rows[2].Words.Select(w => w.Text));
        Assert.Equal(0.6, rows[2].Words[0].Score);
        Assert.True(rows[2].OverThreshold);
        Assert.True(rows[2].WeakReference);
        Assert.Equal(0.3, rows[2].Faithfulness!.Comprehensiveness);
        Assert.Null(rows[0].OverThreshold);
    }

    [Theory]
    [InlineData("not json", "line 2: not a JSON object")]
    [InlineData("""{"id":"x","tokens":[],"scores":[]}""", "line 2: missing text field 'text'")]
    [InlineData("""{"text":"a b","tokens":["[CLS]","a","[SEP]"],"scores":[0,1],"prediction":{"label":"p","probability":1},"target":{"label":"p"},"delta":0,"relative_delta":0}""", "line 2: tokens: 3 tokens but 2 scores")]
    [InlineData("""{"text":"a","tokens":["[CLS]","a","[SEP]"],"scores":[0,"x",0],"prediction":{"label":"p","probability":1},"target":{"label":"p"},"delta":0,"relative_delta":0}""", "line 2: scores[1] must be a number")]
    public void BadLinesAreRefusedNamingFileLineAndField(string line, string expected)
    {
        var path = Temp("bad.jsonl", ExplainLine("fine text"), line);
        var html = Path.Combine(Path.GetDirectoryName(path)!, "report.html");
        var (exit, stdout, stderr) = Fleet("report", path, "--html", html);
        Assert.Equal(2, exit);
        Assert.Equal("", stdout);
        Assert.StartsWith("fleet report: ", stderr);
        Assert.Contains(path, stderr);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.False(File.Exists(html), "no page is written for a bad file");
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "*.tmp"));
    }

    private static (int Exit, string Stdout, string Stderr) Fleet(params string[] args)
    {
        TestEnvironment.Init();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = AttributionFleet.Cli.Parsing.FleetCli.Run(args, stdout, stderr, CancellationToken.None);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void ReportIsACommandWithHelpRequiredHtmlAndUsageErrors()
    {
        var (helpExit, help, _) = Fleet("report", "--help");
        Assert.Equal(0, helpExit);
        foreach (var option in new[] { "RESULTS.jsonl", "--html", "(REQUIRED)", "--title", "--relative-delta-threshold", "[default: 0.0001]", "Exit codes" })
            Assert.Contains(option, help);
        var path = Temp("ok.jsonl", ExplainLine("fine text"));
        var dir = Path.GetDirectoryName(path)!;
        Assert.Equal(2, Fleet("report", path).Exit); // --html is required
        Assert.Equal(2, Fleet("report", "--html", Path.Combine(dir, "r.html")).Exit); // and the results file
        var (missingExit, _, missing) = Fleet("report", Path.Combine(dir, "none.jsonl"), "--html", Path.Combine(dir, "r.html"));
        Assert.Equal(2, missingExit);
        Assert.Contains("results file not found", missing);
        var (dirExit, _, noDir) = Fleet("report", path, "--html", Path.Combine(dir, "no", "such", "r.html"));
        Assert.Equal(2, dirExit);
        Assert.Contains("--html", noDir);
        var (typoExit, _, typo) = Fleet("report", path, "--htm", Path.Combine(dir, "r.html"));
        Assert.Equal(2, typoExit);
        Assert.Contains("--html", typo);
        Assert.Equal(2, Fleet("report", path, "--html", Path.Combine(dir, "r.html"), "--relative-delta-threshold", "-1").Exit);
        Assert.False(File.Exists(Path.Combine(dir, "r.html")));
        var (okExit, ok, _) = Fleet("report", path, "--html", Path.Combine(dir, "r.html"), "--title", "job 7");
        Assert.Equal(0, okExit);
        Assert.Contains("wrote", ok);
        Assert.Contains("<title>job 7</title>", File.ReadAllText(Path.Combine(dir, "r.html")));
    }

    [Fact]
    public void NullsStatusAndHeadsAreRead()
    {
        // explain's non-finite line: numbers null, status non_finite.
        var nonFinite = """
            {"id":"n","text":"a b","tokens":["[CLS]","a","b","[SEP]"],"scores":[null,null,null,null],"status":"non_finite",
             "prediction":{"label":"p","index":0,"probability":null,"head":"single-label","value":null},"target":{"label":"p","index":0},
             "delta":null,"relative_delta":null,"over_threshold":true,"weak_reference":null,"probability_change":null,
             "classes":[{"target":{"label":"p","index":0},"scores":[null,null,null,null],"f_x":null,"f_x0":null,"delta":null,"relative_delta":null,"weak_reference":null,"probability_change":null}]}
            """.ReplaceLineEndings("");
        // A regression value: no probability by design, not non-finite.
        var regression = """
            {"id":"r","text":"a b","tokens":["[CLS]","a","b","[SEP]"],"scores":[0,0.5,-0.25,0],"status":"ok",
             "prediction":{"label":"LABEL_0","index":0,"probability":null,"head":"regression","value":2.5},"target":{"label":"LABEL_0","index":0},
             "delta":1e-9,"relative_delta":1e-9,"over_threshold":false,"weak_reference":null,"probability_change":null}
            """.ReplaceLineEndings("");
        // The fleet's line for a regression model: no head, status ok, probability null.
        var fleet = """
            {"id":"f","text":"a b","tokens":["[CLS]","a","b","[SEP]"],"scores":[0,0.5,-0.25,0],"status":"ok",
             "prediction":{"label":"LABEL_0","index":0,"probability":null},"target":{"label":"LABEL_0","index":0},
             "delta":1e-9,"relative_delta":1e-9,"over_threshold":false}
            """.ReplaceLineEndings("");
        var rows = JobResults.Read(Temp("heads.jsonl", nonFinite, regression, fleet));
        Assert.True(rows[0].NonFinite);
        Assert.True(double.IsNaN(rows[0].Probability!.Value));
        Assert.True(double.IsNaN(rows[0].Classes[0].Words[0].Score));
        Assert.False(rows[1].NonFinite);
        Assert.Null(rows[1].Probability);
        Assert.Equal(2.5, rows[1].Value);
        Assert.False(rows[2].NonFinite);
        Assert.Null(rows[2].Probability);
        var html = JobReport.Render(rows);
        Assert.Matches("<div class=\"v\">1</div><div class=\"note\">non-finite", html);
        Assert.Contains("\"pr\":null,\"v\":2.5", html);
    }

    [Fact]
    public void ClassRowsUseTheWordsOfTheLineAndTheFleetsNonFiniteRowsAreNulls()
    {
        // explain --json --target all: the class rows are merged into the same words (pieces) as the line's own.
        var line = """
            {"id":"w","text":"can't stop","tokens":["[CLS]","can","'","t","stop","[SEP]"],"scores":[0,0.1,0.2,0.3,-0.5,0],
             "words":[{"text":"[CLS]","start":0,"end":0,"score":0,"pieces":[0],"special":true},{"text":"can't","start":0,"end":5,"score":0.6,"pieces":[1,2,3],"special":false},
                      {"text":"stop","start":6,"end":10,"score":-0.5,"pieces":[4],"special":false},{"text":"[SEP]","start":0,"end":0,"score":0,"pieces":[5],"special":true}],
             "prediction":{"label":"positive","index":1,"probability":0.9},"target":{"label":"positive","index":1},"delta":1e-9,"relative_delta":1e-8,
             "classes":[{"target":{"label":"negative","index":0},"scores":[0,-0.1,-0.2,-0.3,0.5,0]},{"target":{"label":"positive","index":1},"scores":[0,0.1,0.2,0.3,-0.5,0]}]}
            """.ReplaceLineEndings("");
        var row = JobResults.Read(Temp("classes.jsonl", line)).Single();
        Assert.Equal(new[] { "can't", "stop" }, row.Words.Select(w => w.Text));
        Assert.Equal(new[] { "can't", "stop" }, row.Classes[0].Words.Select(w => w.Text));
        Assert.Equal(-0.6, row.Classes[0].Words[0].Score, 12);

        // A fleet result whose class row is not finite: status non_finite, every number null, no "NaN" string.
        var e = HtmlReportTests.Synthetic("cold food");
        var json = Output.Line(Output.AttributionJson(new TextAttribution
        {
            Id = "f", Text = e.Text, Tokens = e.Tokens, Scores = e.Scores,
            Prediction = new PredictedLabel { Label = "negative", Index = 0, Probability = 0.7 },
            TargetIndex = 0, TargetLabel = "negative", Output = e.Output, Fx = e.Fx, Fx0 = e.Fx0, Delta = 1e-9, RelativeDelta = 1e-9,
            Method = "deeplift", SoftmaxRule = "exact", Precision = "float32", WeakReference = true, ProbabilityChange = double.NaN,
            Classes = new[]
            {
                new ClassAttributionRow { TargetIndex = 0, TargetLabel = "negative", Scores = e.Scores, Fx = e.Fx, Fx0 = e.Fx0 },
                new ClassAttributionRow { TargetIndex = 1, TargetLabel = "positive", Scores = e.Scores.Select(_ => double.NaN).ToArray(), Fx = double.NaN, Fx0 = e.Fx0, Delta = double.NaN },
            },
        }));
        Assert.DoesNotContain("NaN", json);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.Equal("non_finite", doc.RootElement.GetProperty("status").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, doc.RootElement.GetProperty("weak_reference").ValueKind);
        Assert.Equal(System.Text.Json.JsonValueKind.Null, doc.RootElement.GetProperty("probability_change").ValueKind);
        var bad = doc.RootElement.GetProperty("classes")[1];
        Assert.Equal(System.Text.Json.JsonValueKind.Null, bad.GetProperty("f_x").ValueKind);
        Assert.All(bad.GetProperty("scores").EnumerateArray(), s => Assert.Equal(System.Text.Json.JsonValueKind.Null, s.ValueKind));
        Assert.True(JobResults.Read(Temp("fleet.jsonl", json)).Single().NonFinite);
    }

    [Fact]
    public void SummaryCountsAndTopWordsAreComputedOverTheJob()
    {
        var lines = new[]
        {
            ExplainLine("great great fine"), ExplainLine("great awful"), ExplainLine("bad text", relativeDelta: 5e-3, label: "negative"),
            ExplainLine("nan text", relativeDelta: double.NaN),
        };
        var rows = JobResults.Read(Temp("job.jsonl", lines));
        Assert.True(rows[3].NonFinite);
        var html = JobReport.Render(rows);
        // Synthetic scores: token i (1-based, after [CLS]) scores 0.3·sin(i + 1).
        double S(int i) => 0.3 * Math.Sin(i + 1);
        var totals = new Dictionary<string, double> { ["great"] = S(1) + S(2) + S(1), ["fine"] = S(3), ["awful"] = S(2) };
        Assert.True(totals["great"] > 0);
        var raise = Regex.Match(html, "<h3>class <bdi>positive</bdi></h3>\n<div class=\"four\"><div><h4>raise most \\(total\\)</h4>(.*?)</table>").Groups[1].Value;
        var first = Regex.Match(raise, ">([^<>]+)</span></td><td class=\"num\">([^<]+)<").Groups;
        Assert.Equal("great", first[1].Value);
        Assert.Equal(totals["great"].ToString("+0.0000;-0.0000;0", System.Globalization.CultureInfo.InvariantCulture), first[2].Value);
        Assert.Contains("over the delta threshold", html);
        Assert.Matches("<div class=\"v\">2</div><div class=\"note\">over the delta threshold", html); // 5e-3 and NaN
        Assert.Matches("<div class=\"v\">1</div><div class=\"note\">non-finite", html);
        Assert.Matches("<td><bdi>positive</bdi></td><td class=\"num\">3</td>", html);
        Assert.Matches("<td><bdi>negative</bdi></td><td class=\"num\">1</td>", html);
        var bins = JobReport.Histogram(rows);
        Assert.Equal(4, bins.Sum(b => b.Count));
        Assert.Equal(1, bins[^1].Count);
    }

    [Fact]
    public void ThePageIsWrittenAtomicallyAndLoadsNothingFromOutside()
    {
        var path = Temp("job.jsonl", ExplainLine("Visit https://example.com/x.js now"), ExplainLine(HtmlReportTests.Hostile));
        var dir = Path.GetDirectoryName(path)!;
        var page = Path.Combine(dir, "report.html");
        File.WriteAllText(page, "old");
        var stdout = new StringWriter();
        Assert.Equal(0, ReportCommand.Run(new[] { path, "--html", page }, stdout));
        Assert.Contains("wrote", stdout.ToString());
        var html = File.ReadAllText(page);
        Assert.StartsWith("<!DOCTYPE html>", html);
        Assert.Equal(new[] { page }, Directory.GetFiles(dir, "*.html"));
        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));
        Assert.Contains("default-src 'none'", html);
        Assert.Matches("script-src 'sha256-[A-Za-z0-9+/=]+'", html);
        // The texts live in the JSON block as data (with < > & escaped): outside it, nothing may load anything.
        var data = Regex.Match(html, "<script type=\"application/json\" id=\"data\">([^<]*)</script>");
        Assert.True(data.Success, "one JSON data block with no '<' inside");
        var markup = html.Replace(data.Value, "");
        Assert.DoesNotMatch(new Regex(@"\s(src|href|srcset|action|poster)\s*=", RegexOptions.IgnoreCase), markup);
        Assert.DoesNotMatch(new Regex(@"<\s*(link|img|iframe|object|embed|base|form)\b", RegexOptions.IgnoreCase), html);
        Assert.Equal(2, Regex.Matches(html, "<script").Count); // the data block and the renderer, nothing else
        Assert.DoesNotContain("<script>alert", html);
        Assert.DoesNotContain("</script> <img", html);
    }

    [ChromiumFact]
    public void TheJobReportRendersInChromiumWithHostileTextAsText()
    {
        var lines = Enumerable.Range(0, 300).Select(i => i % 3 == 0 ? ExplainLine(HtmlReportTests.Hostile) : ExplainLine($"text {i} was wonderful but dull")).ToArray();
        var path = Temp("job.jsonl", lines);
        var page = Path.Combine(Path.GetDirectoryName(path)!, "report.html");
        Assert.Equal(0, ReportCommand.Run(new[] { path, "--html", page }, TextWriter.Null));

        var image = PngImage.Decode(Chromium.Screenshot(page, 1200, 2400));
        int green = 0, red = 0, dark = 0;
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
            {
                var (r, g, b) = image[x, y];
                if (g > r + 40 && g > b + 20) green++;
                if (r > g + 60 && r > b + 60) red++;
                if (r < 80 && g < 80 && b < 80) dark++;
            }
        output.WriteLine($"screenshot {image.Width}x{image.Height}: green {green}, red {red}, dark {dark} pixels");
        Assert.True(green > 500 && red > 500 && dark > 2000, $"green {green}, red {red}, dark {dark}: the page is not rendered");

        var dom = Chromium.DumpDom(page);
        Assert.Contains("data-rows-shown=\"200\"", dom); // rows on demand: the first page only
        Assert.Contains("showing 200 of 300", dom);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", dom);
        Assert.DoesNotContain("data-pwned=\"1\"", dom);
        Assert.Equal(2, Regex.Matches(dom, "<script", RegexOptions.IgnoreCase).Count);
        Assert.DoesNotMatch(new Regex(@"<img", RegexOptions.IgnoreCase), dom);
        foreach (var kept in new[] { "שלום", "مرحبا", "😀" }) Assert.Contains(kept, dom);
    }

    [ChromiumFact]
    public void TenThousandTextsOpenFast()
    {
        var words = new[] { "the", "battery", "lasts", "for", "days", "but", "screen", "is", "dim", "and", "support", "never", "answered" };
        var rng = new Random(5);
        var lines = Enumerable.Range(0, 10_000).Select(i =>
            ExplainLine(string.Join(' ', Enumerable.Range(0, 8 + rng.Next(20)).Select(_ => words[rng.Next(words.Length)])),
                label: i % 4 == 0 ? "negative" : "positive", probability: rng.NextDouble())).ToArray();
        var path = Temp("big.jsonl", lines);
        var page = Path.Combine(Path.GetDirectoryName(path)!, "report.html");
        var write = Stopwatch.StartNew();
        Assert.Equal(0, ReportCommand.Run(new[] { path, "--html", page }, TextWriter.Null));
        write.Stop();
        var load = Stopwatch.StartNew();
        var dom = Chromium.DumpDom(page);
        load.Stop();
        int rendered = int.Parse(Regex.Match(dom, "data-rendered-ms=\"(\\d+)\"").Groups[1].Value);
        output.WriteLine($"10,000 texts: page {new FileInfo(page).Length / 1e6:F1} MB written in {write.Elapsed.TotalSeconds:F2} s; " +
            $"first rows on screen {rendered} ms after navigation start; chromium --dump-dom {load.Elapsed.TotalSeconds:F1} s in all (start-up included)");
        Assert.Contains("showing 200 of 10000", dom);
        Assert.True(rendered < 10_000, $"the first rows took {rendered} ms");
        Assert.True(load.Elapsed < TimeSpan.FromSeconds(60), $"chromium took {load.Elapsed.TotalSeconds:F1} s");
    }
}
