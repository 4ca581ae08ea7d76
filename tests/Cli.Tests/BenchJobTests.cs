using AttributionFleet.Cli.Commands;
using AttributionFleet.Engine.Models;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Cli.Tests;

/// <summary><c>fleet bench job</c> on a tiny model: every row printed, the warm job served from the cache, texts written on request.</summary>
public class BenchJobTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bench-job-" + Guid.NewGuid().ToString("N"));

    private string TinyModel()
    {
        var config = RandomModels.BertConfig(layers: 1, hidden: 16, heads: 2, intermediate: 32, vocab: 1200, labels: 2, maxPositions: 64);
        Directory.CreateDirectory(_dir);
        var words = new[] { "the", "movie", "was", "great", "bad", "not", "a", "film" };
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), Enumerable.Range(0, config.VocabSize).Select(i => i switch
        {
            0 => "[PAD]", 100 => "[UNK]", 101 => "[CLS]", 102 => "[SEP]", 103 => "[MASK]",
            >= 1000 and < 1008 => words[i - 1000],
            _ => $"[unused{i}]",
        }));
        using var model = RandomModels.Create(config, seed: 2, std: 0.3, stress: true);
        RandomModels.Save(model, _dir);
        return _dir;
    }

    [Fact]
    public void PrintsFixedMixedAndCacheFigures()
    {
        var stdout = new StringWriter();
        int code = BenchJobCommand.Run(new BenchJobOptions { Model = TinyModel(), Texts = 12, Lengths = "6-20", BatchSize = 4, Exact = true, Repeats = 3 }, stdout);
        output.WriteLine(stdout.ToString());
        Assert.Equal(0, code);
        var lines = stdout.ToString().Split('\n');
        foreach (var row in new[] { "fixed length", "mixed lengths, cold cache", "mixed lengths, warm cache", "mixed plan:", "the plan's widths", "tokenizing the job", "next job", "sixth job", "one-length batches, no cache", "peak RSS" })
            Assert.Contains(lines, l => l.StartsWith(row, StringComparison.Ordinal));
        var warm = lines.Single(l => l.StartsWith("mixed lengths, warm cache", StringComparison.Ordinal));
        Assert.Contains("100 %", warm); // the same lengths again: every reference from the cache
        var cold = lines.Single(l => l.StartsWith("mixed lengths, cold cache", StringComparison.Ordinal));
        Assert.DoesNotContain("100 %", cold); // every length recorded once (a length cut across two batches is a hit for the second)
        // Three alternating pairs, each a positive ratio, and their median among them.
        var paired = lines.Single(l => l.StartsWith("mixed warm vs fixed length", StringComparison.Ordinal));
        var pairs = paired[(paired.IndexOf("(pairs ", StringComparison.Ordinal) + 7)..paired.LastIndexOf(')')].Split(", ").Select(double.Parse).ToList();
        Assert.Equal(3, pairs.Count);
        Assert.All(pairs, r => Assert.True(r > 0));
        Assert.Contains($"median {pairs.OrderBy(r => r).ElementAt(1):F3}x", paired);
    }

    [Fact]
    public void WritesTheTextsAndTheirIds()
    {
        var path = Path.Combine(Path.GetTempPath(), "bench-job-texts-" + Guid.NewGuid().ToString("N") + ".txt");
        try
        {
            var stdout = new StringWriter();
            Assert.Equal(0, BenchJobCommand.Run(new BenchJobOptions { Model = TinyModel(), Texts = 5, Lengths = "8-12", WriteTexts = path }, stdout));
            Assert.Equal(5, File.ReadAllLines(path).Length);
            using var ids = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path + ".ids.json"));
            var lengths = ids.RootElement.GetProperty("ids").EnumerateArray().Select(a => a.GetArrayLength()).ToList();
            Assert.Equal(5, lengths.Count);
            Assert.All(lengths, l => Assert.InRange(l, 8, 12));
        }
        finally
        {
            File.Delete(path);
            File.Delete(path + ".ids.json");
        }
    }

    [WithoutCudaFact]
    public void ADeviceThisBuildLacksIsRefusedByName()
    {
        var e = Assert.Throws<Engine.ModelLoadException>(() => BenchJobCommand.Run(new BenchJobOptions { Model = TinyModel(), Device = "cuda" }, new StringWriter()));
        Assert.Contains("cuda", e.Message);
    }

    [Fact]
    public void RepeatsMustBePositive()
    {
        var e = Assert.Throws<UsageException>(() => BenchJobCommand.Run(new BenchJobOptions { Model = TinyModel(), Repeats = 0 }, new StringWriter()));
        Assert.Contains("--repeats", e.Message);
    }

    [Fact]
    public void ABadLengthSpecIsAUsageError()
    {
        var e = Assert.Throws<UsageException>(() => BenchJobCommand.Run(new BenchJobOptions { Model = TinyModel(), Lengths = "20-10" }, new StringWriter()));
        Assert.Contains("--lengths", e.Message);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

/// <summary>A fact about a machine without CUDA (the refusal of --device cuda); skipped where CUDA is available.</summary>
public sealed class WithoutCudaFactAttribute : FactAttribute
{
    public WithoutCudaFactAttribute()
    {
        if (TorchSharp.torch.cuda.is_available()) Skip = "CUDA is available here: --device cuda runs instead of being refused";
    }
}
