using System.Globalization;
using System.Text.RegularExpressions;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Cli.Parsing;
using AttributionFleet.Cli.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Cli.Tests;

/// <summary>
/// `fleet bench attribute --architecture deberta-v2|modernbert` at a tiny size (one base-width layer, 2 texts of 16
/// tokens, one repeat, no IG): it runs and prints the same columns as the BERT benchmark, with DeepLift's delta small.
/// Figures are not checked (a shared machine); the integrator runs the base-sized benchmark.
/// </summary>
public class BenchAttributeTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("deberta-v2", "deberta-v3-base-sized (1 layers, 768, 12 heads, 3072; relative attention p2c|c2p, position_buckets 256, max_relative_positions 512, share_att_key, norm_rel_ebd layer_norm; vocab 30522")]
    [InlineData("modernbert", "modernbert-base-sized (1 layers, 768, 12 heads, 1152 GeGLU; global attention in 1 of the 1 layers")]
    public void RunsAtATinySizeAndPrintsTheColumns(string architecture, string header)
    {
        var (code, stdout) = TestEnvironment.Run(BenchCommand.Run, "attribute", "--architecture", architecture,
            "--layers", "1", "--length", "16", "--batch", "2", "--repeats", "1", "--ig-texts", "0");
        output.WriteLine(stdout);
        Assert.Equal(0, code);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("bench attribute: " + header, lines[0]);
        Assert.Contains("batch 2, length 16, Float32", lines[0]);
        const string number = @"([0-9.]+(?:E[-+]?[0-9]+)?)";
        Assert.Matches(new Regex(@"^forward +[0-9.]+ s/text +[0-9.]+ texts/s +[0-9]+ tokens/s +[0-9.]+ GFLOP/s"), lines.Single(l => l.StartsWith("forward ")));
        Assert.Matches(new Regex(@"^gradient \(fwd\+bwd\) +[0-9.]+ s/text +[0-9.]+ texts/s  cost [0-9.]+x forward"), lines.Single(l => l.StartsWith("gradient")));
        var deeplift = new Regex(@"^deeplift/Exact +[0-9.]+ s/text +[0-9.]+ texts/s  cost ([0-9.]+)x forward \(paired; .*relative delta median " + number + " max " + number)
            .Match(lines.Single(l => l.StartsWith("deeplift/")));
        Assert.True(deeplift.Success, "no deeplift/Exact line in the expected form");
        Assert.True(double.Parse(deeplift.Groups[1].Value, CultureInfo.InvariantCulture) > 0);
        Assert.True(double.Parse(deeplift.Groups[3].Value, CultureInfo.InvariantCulture) < 1e-3, "DeepLift's relative delta in float32");
        Assert.Contains(lines, l => l.StartsWith("peak RSS of the process while DeepLift attributes a batch of 2 x 16"));
        Assert.Contains(lines, l => l.StartsWith("matmul ceiling "));
        Assert.DoesNotContain(lines, l => l.StartsWith("integrated-gradients"));
    }

    [Theory]
    [InlineData("attribute --architecture gpt2", "--architecture must be one of bert|deberta-v2|modernbert, got 'gpt2'")]
    [InlineData("attribute --pooling cls", "--pooling is ModernBERT's classifier_pooling; use it with --architecture modernbert")]
    [InlineData("attribute --architecture modernbert --pooling max", "--pooling must be mean or cls, got 'max'")]
    [InlineData("attribute --architecture deberta-v2 --layers 0", "--layers must be at least 1, got 0")]
    [InlineData("predict --architecture modernbert", "unknown option --architecture")]
    public void BadOptionsAreRefusedNamingTheOption(string args, string message)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = FleetCli.Run(("bench " + args).Split(' '), stdout, stderr);
        Assert.Equal(2, code);
        Assert.Contains(message, stderr.ToString());
    }
}
