using System.Text.RegularExpressions;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Report;
using AttributionFleet.Cli.Tests.Support;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Tokenization;
using Xunit;
using Xunit.Abstractions;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Tests;

public class HtmlReportTests(ITestOutputHelper output)
{
    public const string Hostile =
        "<script>alert(1)</script> <img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"> \"quotes\" & 'apostrophes' שלום עולם مرحبا 😀👍🏽";

    /// <summary>An explanation with one token per whitespace-separated word (offsets into the text) and made-up scores.</summary>
    internal static Explanation Synthetic(string text, double relativeDelta = 1e-7, string[]? tokens = null, double[]? scores = null)
    {
        var offsets = new List<TokenOffset> { new(0, 0) };
        var toks = new List<string> { "[CLS]" };
        if (tokens is null)
        {
            foreach (Match m in Regex.Matches(text, @"\S+"))
            {
                offsets.Add(new TokenOffset(m.Index, m.Length));
                toks.Add(m.Value.ToLowerInvariant());
            }
        }
        else
        {
            toks.AddRange(tokens);
            offsets.AddRange(tokens.Select(_ => new TokenOffset(-1, 1))); // unusable offsets: text from the tokens
        }
        toks.Add("[SEP]");
        offsets.Add(new TokenOffset(0, 0));
        var s = scores is null ? toks.Select((_, i) => Math.Sin(i + 1) * 0.3).ToArray() : new[] { 0.0 }.Concat(scores).Append(0.0).ToArray();
        s[0] = 0;
        s[^1] = 0;
        double fx = 1.5, fx0 = fx - s.Sum();
        return new Explanation(text, toks.ToArray(), offsets.ToArray(), s, new Prediction("positive", 1, 0.8), 1, "positive",
            "centered-logit", fx, fx0, relativeDelta * (fx - fx0), relativeDelta, "deeplift", "exact", "float32", false);
    }

    [Fact]
    public void HostileTextIsEscapedAndShownAsText()
    {
        var html = HtmlReport.Render(new[] { Synthetic(Hostile) }, new HtmlReportOptions { Title = "<b>title</b>", Model = "\"model\"", Ids = new[] { "<id>" } });
        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<img", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<b>title", html);
        Assert.DoesNotContain("<id>", html);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html);
        Assert.Contains("onerror=&quot;document.body.setAttribute(&#39;data-pwned&#39;,&#39;1&#39;)&quot;&gt;", html);
        Assert.Contains("&amp;", html);
        Assert.Contains("&#39;apostrophes&#39;", html);
        Assert.Contains("&quot;model&quot;", html);
        foreach (var kept in new[] { "שלום", "עולם", "مرحبا", "😀👍🏽" }) Assert.Contains(kept, html);
        Assert.Contains("dir=\"auto\"", html);
        // Every attribute value is quoted and no quote from the text closes one early.
        foreach (Match m in Regex.Matches(html, "title=\"([^\"]*)\"")) Assert.DoesNotContain('<', m.Groups[1].Value);
    }

    [Fact]
    public void EscapeHandlesControlCharactersAndLoneSurrogates()
    {
        Assert.Equal("a b&#10;c&#9;d", HtmlReport.Escape("a\u0000b\nc\td"));
        Assert.Equal("x\uFFFDy", HtmlReport.Escape("x\uD800y"));
        Assert.Equal("😀", HtmlReport.Escape("😀"));
        Assert.Equal("&lt;&gt;&amp;&quot;&#39;", HtmlReport.Escape("<>&\"'"));
    }

    [Fact]
    public void ThePageMakesNoExternalRequests()
    {
        var html = HtmlReport.Render(new[] { Synthetic("Visit https://example.com/x.js or //evil.test now"), Synthetic(Hostile) });
        // User text may mention URLs as text, but nothing may load them: no src/href attributes, scripts, imports or url().
        Assert.DoesNotMatch(new Regex(@"\s(src|href|srcset|action|poster|data)\s*=", RegexOptions.IgnoreCase), html);
        Assert.DoesNotMatch(new Regex(@"<\s*(script|link|img|iframe|object|embed|video|audio|source|base|form)\b", RegexOptions.IgnoreCase), html);
        Assert.DoesNotMatch(new Regex(@"@import|url\s*\(", RegexOptions.IgnoreCase), html);
        var withoutText = Regex.Replace(html, @"<div class=""text""[\s\S]*?</div>", "");
        Assert.DoesNotContain("http://", withoutText);
        Assert.DoesNotContain("https://", withoutText);
        Assert.Contains("default-src 'none'", html);
    }

    [Fact]
    public void WordPiecesAndBpePiecesAreMergedIntoWords()
    {
        var wordPiece = Words.Merge("Unbelievably good!", new[] { "[CLS]", "un", "##bel", "##ie", "##va", "##bly", "good", "!", "[SEP]" },
            new[] { 0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, -0.25, 0 },
            new[] { (0, 0), (0, 2), (2, 3), (5, 2), (7, 2), (9, 3), (13, 4), (17, 1), (0, 0) });
        Assert.Equal(new[] { "[CLS]", "Unbelievably", "good", "!", "[SEP]" }, wordPiece.Select(w => w.Text));
        Assert.Equal(1.5, wordPiece[1].Score, 12);
        Assert.Equal(5, wordPiece[1].Pieces.Count);
        Assert.True(wordPiece[2].SpaceBefore);
        Assert.False(wordPiece[3].SpaceBefore);

        var bpe = Words.Merge("Unbelievably good!", new[] { "<s>", "Un", "bel", "iev", "ably", "Ġgood", "!", "</s>" },
            new[] { 0, 0.1, 0.2, 0.3, 0.4, 1.0, -0.25, 0 });
        Assert.Equal(new[] { "<s>", "Unbelievably", "good!", "</s>" }, bpe.Select(w => w.Text));
        Assert.True(bpe[2].SpaceBefore);
        Assert.Equal(1.0, bpe[1].Score, 12);
        Assert.Equal(0.75, bpe[2].Score, 12);

        var html = HtmlReport.Render(new[] { Synthetic("x", tokens: new[] { "un", "##bel", "##ie", "##va", "##bly" }, scores: new[] { 0.1, 0.2, 0.3, 0.4, 0.5 }) });
        Assert.Contains(">unbelievably</span>", html);
        Assert.Contains("title=\"unbelievably: +1.5000&#10;un +0.1000&#10;##bel +0.2000", html);
    }

    [Fact]
    public void LargeRelativeDeltaShowsAWarning()
    {
        var fine = HtmlReport.Render(new[] { Synthetic("fine text", 5e-5) });
        var bad = HtmlReport.Render(new[] { Synthetic("bad text", 5e-3) });
        Assert.DoesNotContain("class=\"warn\"", fine);
        Assert.Contains("class=\"warn\"", bad);
        Assert.Contains("5.00E-003 exceeds 0.0001", bad);
        Assert.Contains("class=\"warn\"", HtmlReport.Render(new[] { Synthetic("fine text", 5e-5) }, new HtmlReportOptions { DeltaThreshold = 1e-5 }));
        Assert.Contains("class=\"warn\"", HtmlReport.Render(new[] { Synthetic("nan", double.NaN) }));
    }

    [ChromiumFact]
    public void TheReportOfTheDefaultModelRendersInChromium()
    {
        var dir = Directory.CreateTempSubdirectory("fleet-report-").FullName;
        try
        {
            var page = Path.Combine(dir, "report.html");
            var (code, stdout) = TestEnvironment.Run(ExplainCommand.Run, "--html", page, "--json",
                DefaultModelTests.Demo, "Terrible service and cold food.", "The staff were friendly and the room was spotless.");
            Assert.Equal(0, code);
            Assert.Equal(3, TestEnvironment.JsonLines(stdout).Count);
            var html = File.ReadAllText(page);
            Assert.Contains("wonderful</span>", html);

            var png = Chromium.Screenshot(page);
            output.WriteLine($"screenshot: {png.Length} bytes");
            Assert.True(png.Length > 5_000, $"screenshot of {png.Length} bytes");
            var image = PngImage.Decode(png);
            Assert.Equal((1200, 800), (image.Width, image.Height));
            int green = 0, red = 0, dark = 0;
            for (int y = 0; y < image.Height; y++)
                for (int x = 0; x < image.Width; x++)
                {
                    var (r, g, b) = image[x, y];
                    if (g > r + 40 && g > b + 20) green++;
                    if (r > g + 60 && r > b + 60) red++;
                    if (r < 80 && g < 80 && b < 80) dark++;
                }
            output.WriteLine($"green {green}, red {red}, dark (text) {dark} pixels");
            Assert.True(green > 500, $"{green} green pixels: the words raising the target are not coloured");
            Assert.True(red > 500, $"{red} red pixels: the words lowering the target are not coloured");
            Assert.True(dark > 2000, $"{dark} dark pixels: no text rendered");

            var dom = Chromium.DumpDom(page);
            Assert.Contains("wonderful", dom);
            Assert.Contains("Terrible", dom);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [ChromiumFact]
    public void HostileTextRendersAsTextWithoutRunningScript()
    {
        var dir = Directory.CreateTempSubdirectory("fleet-hostile-").FullName;
        try
        {
            var page = Path.Combine(dir, "hostile.html");
            File.WriteAllText(page, HtmlReport.Render(new[] { Synthetic(Hostile) }, new HtmlReportOptions { Title = "<script>document.title='pwned'</script>" }));
            var dom = Chromium.DumpDom(page);
            output.WriteLine(dom.Length > 4000 ? dom[^4000..] : dom);
            Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", dom);
            Assert.Contains("&lt;img", dom);
            Assert.DoesNotContain("data-pwned=\"1\"", dom);
            Assert.DoesNotContain("<title>pwned</title>", dom);
            Assert.DoesNotMatch(new Regex(@"<script|<img", RegexOptions.IgnoreCase), dom);
            foreach (var kept in new[] { "שלום", "مرحبا", "😀" }) Assert.Contains(kept, dom);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
