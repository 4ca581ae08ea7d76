using AttributionFleet.Engine.Models;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>A small random BERT classifier (2 layers, hidden 64, 2 labels) saved once per test process.</summary>
public static class TinyModel
{
    private static readonly Lazy<string> Folder = new(Create);

    public static string Path => Folder.Value;

    private static string Create()
    {
        var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"fleet-tests-model-{Environment.ProcessId}-{Guid.NewGuid():N}");
        using var model = RandomModels.Create(RandomModels.BertConfig(layers: 2, hidden: 64, heads: 4, intermediate: 128, vocab: 1000, labels: 2), seed: 7, std: 0.1, stress: true);
        RandomModels.Save(model, dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return dir;
    }

    /// <summary>Texts of varied token length ([UNK] per word with this vocabulary).</summary>
    public static List<AttributionFleet.Contracts.V1.JobText> Texts(int count, string prefix = "t") =>
        Enumerable.Range(0, count)
            .Select(i => new AttributionFleet.Contracts.V1.JobText { Id = $"{prefix}{i}", Text = string.Join(' ', Enumerable.Repeat("word", 1 + i % 5)) + $" text {i}" })
            .ToList();
}
