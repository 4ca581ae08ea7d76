using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Layouts; // not ".Checkpoints": that would shadow Engine.Checkpoints in other tests

/// <summary>
/// The file layouts users have: a Hugging Face hub cache (links into blobs/), sharded safetensors with an index,
/// pytorch_model.bin (torch.save, made by tests/fixtures/layouts/make_fixtures.py) — each loads to the same
/// logits as the plain folder.
/// </summary>
public sealed class CheckpointLayoutTests : IDisposable
{
    private static string Fixtures => Path.Combine(RepoPaths.Root, "tests", "fixtures", "layouts");
    private static string Plain => Path.Combine(Fixtures, "tiny-bert");

    private readonly string _dir = Directory.CreateTempSubdirectory("af-layouts-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // A padded batch: the second row ends in [PAD]s.
    private static readonly long[,] Ids = { { 101, 104, 105, 106, 107, 102 }, { 101, 110, 111, 102, 0, 0 } };
    private static readonly long[,] Mask = { { 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 0, 0 } };

    private static float[] LogitsOf(string dir)
    {
        using var model = ModelLoader.Load(dir);
        using var logits = model.Logits(tensor(Ids), tensor(Mask));
        return logits.data<float>().ToArray();
    }

    private static readonly Lazy<float[]> PlainLogits = new(() => LogitsOf(Plain));

    private static void AssertSameLogits(float[] actual, double tolerance = 1e-6)
    {
        float[] expected = PlainLogits.Value;
        Assert.Equal(expected.Length, actual.Length);
        Assert.True(expected.Max(Math.Abs) > 0.05, "the plain model's logits should not be trivially small");
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"logit {i}: {actual[i]} vs {expected[i]}");
    }

    [Fact]
    public void PyTorchBinLoadsToTheSameLogits() => AssertSameLogits(LogitsOf(Path.Combine(Fixtures, "tiny-bert-bin")), 0);

    [Fact]
    public void PyTorchBinTensorsEqualThePlainOnesIncludingStridedAndOffsetViews()
    {
        using var plain = CheckpointFolder.OpenWeights(Plain);
        using var bin = CheckpointFolder.OpenWeights(Path.Combine(Fixtures, "tiny-bert-bin"));
        Assert.IsType<PyTorchCheckpointFile>(bin);
        Assert.Equal(plain.Tensors.Keys.Order(), bin.Tensors.Keys.Order());
        foreach (string name in plain.Tensors.Keys)
        {
            using var a = plain.Load(name);
            using var b = bin.Load(name);
            Assert.Equal(a.shape, b.shape);
            Assert.True(a.eq(b).all().item<bool>(), name);
        }
    }

    [Fact]
    public void ShardedPyTorchBinLoadsToTheSameLogits() => AssertSameLogits(LogitsOf(Path.Combine(Fixtures, "tiny-bert-bin-sharded")), 0);

    [Theory]
    [InlineData("tiny-bert-bin-f16", ScalarType.Float16, "F16")]
    [InlineData("tiny-bert-bin-bf16", ScalarType.BFloat16, "BF16")]
    public void HalfPrecisionPyTorchBinHoldsTheRoundedValuesAndLoads(string folder, ScalarType type, string dtypeName)
    {
        string dir = Path.Combine(Fixtures, folder);
        using (var plain = CheckpointFolder.OpenWeights(Plain))
        using (var bin = CheckpointFolder.OpenWeights(dir))
        {
            Assert.Equal(dtypeName, bin.Tensors["classifier.weight"].DType);
            foreach (string name in plain.Tensors.Keys.Where(k => !k.EndsWith("position_ids")))
            {
                using var a = plain.Load(name, type);
                using var b = bin.Load(name);
                Assert.True(a.eq(b).all().item<bool>(), name);
            }
        }

        AssertSameLogits(LogitsOf(dir), 0.1); // half-precision weights, float32 arithmetic
    }

    [Fact]
    public void PickleWithManyMemoEntriesAndViewsIntoOneStorage()
    {
        using var bin = PyTorchCheckpointFile.Open(Path.Combine(Fixtures, "many-views.bin"));
        Assert.Equal(400, bin.Tensors.Count);
        for (int i = 0; i < 400; i += 37)
        {
            using var t = bin.Load($"t{i}");
            Assert.Equal(new long[] { 1 }, t.shape);
            Assert.Equal((float)i, t.item<float>());
        }
    }

    [Fact]
    public void PickleThatWouldRunCodeIsRefusedAndNotRun()
    {
        string marker = "/tmp/attributionfleet-evil-pickle-ran";
        File.Delete(marker);
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(Path.Combine(Fixtures, "evil")));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("posix.system", e.Message);
        Assert.Contains("safetensors", e.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void LegacyOrCorruptBinIsReportedWithTheFile()
    {
        string dir = CopyOf(Plain, "legacy", except: "model.safetensors");
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46]);
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("legacy", e.Message);
    }

    [Theory]
    [InlineData("pytorch_model/data.pkl", "pickle")]
    [InlineData("pytorch_model/data/0", "storage")]
    public void TruncatedBinEntryIsReportedWithTheFile(string entry, string expected)
    {
        string dir = CopyOf(Path.Combine(Fixtures, "tiny-bert-bin"), "truncated-" + expected);
        string bin = Path.Combine(dir, "pytorch_model.bin");
        using (var zip = System.IO.Compression.ZipFile.Open(bin, System.IO.Compression.ZipArchiveMode.Update))
        {
            var e = zip.GetEntry(entry)!;
            byte[] data;
            using (var s = e.Open())
            using (var ms = new MemoryStream())
            {
                s.CopyTo(ms);
                data = ms.ToArray();
            }

            e.Delete();
            using var w = zip.CreateEntry(entry, System.IO.Compression.CompressionLevel.NoCompression).Open();
            w.Write(data, 0, data.Length / 2);
        }

        var ex = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("pytorch_model.bin", ex.Message);
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void ShardedSafetensorsLoadToTheSameLogits()
    {
        string dir = Sharded("sharded");
        AssertSameLogits(LogitsOf(dir), 0);
        Assert.IsType<ShardedTensorSource>(CheckpointFolder.OpenWeights(dir).Also(s => s.Dispose()));
        Assert.Equal(new FileInfo(Path.Combine(dir, "model-00001-of-00002.safetensors")).Length + new FileInfo(Path.Combine(dir, "model-00002-of-00002.safetensors")).Length,
            CheckpointFolder.WeightBytes(dir));
    }

    [Fact]
    public void ShardedWithAMissingShardNamesIt()
    {
        string dir = Sharded("missing-shard");
        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
        Assert.Contains("model.safetensors.index.json", e.Message);
    }

    [Fact]
    public void ShardedIndexThatPutsATensorInTheWrongShardIsReported()
    {
        string dir = Sharded("wrong-shard");
        string index = Path.Combine(dir, "model.safetensors.index.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(index))!;
        string shard = json["weight_map"]!["classifier.bias"]!.GetValue<string>();
        json["weight_map"]!["classifier.bias"] = shard.StartsWith("model-00001") ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("classifier.bias", e.Message);
    }

    [Fact]
    public void HubCacheModelFolderResolvesRefsMainAndLoadsThroughLinks()
    {
        (string modelFolder, string snapshot) = HubCache("models--org--tiny-bert");
        Assert.Equal(snapshot, CheckpointFolder.Resolve(modelFolder));
        Assert.Equal(snapshot, CheckpointFolder.Resolve(snapshot));
        AssertSameLogits(LogitsOf(CheckpointFolder.Resolve(modelFolder)), 0);
        // The links' own lengths are those of their targets' names; the budget must see the blobs.
        Assert.Equal(new FileInfo(Path.Combine(Plain, "model.safetensors")).Length, CheckpointFolder.WeightBytes(snapshot));
    }

    /// <summary>Library callers need not resolve first: ModelLoader and LoadedModel take the hub-cache model folder itself.</summary>
    [Fact]
    public void ModelLoaderAndLoadedModelTakeTheHubCacheModelFolder()
    {
        (string modelFolder, string snapshot) = HubCache("models--org--direct");
        AssertSameLogits(LogitsOf(modelFolder), 0);
        using var loaded = AttributionFleet.Engine.Text.LoadedModel.Load(modelFolder, CPU);
        Assert.Equal(snapshot, loaded.Directory);
    }

    [Fact]
    public void HubCacheWithoutRefsMainUsesItsOnlySnapshot()
    {
        (string modelFolder, string snapshot) = HubCache("models--org--no-ref");
        File.Delete(Path.Combine(modelFolder, "refs", "main"));
        Assert.Equal(snapshot, CheckpointFolder.Resolve(modelFolder));
    }

    [Fact]
    public void HubCacheRefNamingAMissingSnapshotIsReported()
    {
        (string modelFolder, _) = HubCache("models--org--bad-ref");
        File.WriteAllText(Path.Combine(modelFolder, "refs", "main"), "0123456789abcdef");
        var e = Assert.Throws<ModelLoadException>(() => CheckpointFolder.Resolve(modelFolder));
        Assert.Contains("0123456789abcdef", e.Message);
        Assert.Contains("refs", e.Message);
    }

    [Fact]
    public void DanglingLinkSaysTheDownloadIsIncomplete()
    {
        (_, string snapshot) = HubCache("models--org--dangling");
        string blob = File.ResolveLinkTarget(Path.Combine(snapshot, "model.safetensors"), true)!.FullName;
        File.Delete(blob);
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(snapshot));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void FolderWithoutWeightsListsWhatWasLookedFor()
    {
        string dir = CopyOf(Plain, "no-weights", except: "model.safetensors");
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        foreach (string name in CheckpointFolder.WeightFileNames) Assert.Contains(name, e.Message);
    }

    [Fact]
    public void TokenizerLoadsThroughHubCacheLinks()
    {
        (_, string snapshot) = HubCache("models--org--tok");
        var t = AttributionFleet.Engine.Tokenization.TokenizerLoader.Load(snapshot, "bert");
        Assert.Equal([101, 104, 105, 102], t.Encode("the movie", 8).Ids);
    }

    private string CopyOf(string source, string name, string? except = null)
    {
        string dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (string f in Directory.GetFiles(source).Where(f => Path.GetFileName(f) != except))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    /// <summary>The plain folder split into two safetensors shards with an index, as save_pretrained(max_shard_size=…) writes it.</summary>
    private string Sharded(string name)
    {
        string dir = CopyOf(Plain, name, except: "model.safetensors");
        using var plain = SafeTensorsFile.Open(Path.Combine(Plain, "model.safetensors"));
        string[] names = plain.Tensors.Keys.ToArray();
        var map = new Dictionary<string, string>();
        for (int part = 0; part < 2; part++)
        {
            string file = $"model-0000{part + 1}-of-00002.safetensors";
            var tensors = names.Where((_, i) => i % 2 == part).Select(n => new KeyValuePair<string, Tensor>(n, plain.Load(n))).ToList();
            SafeTensorsWriter.Write(Path.Combine(dir, file), tensors);
            foreach (var (n, t) in tensors)
            {
                map[n] = file;
                t.Dispose();
            }
        }

        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
            JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = map }));
        return dir;
    }

    /// <summary>hub/models--org--name/{blobs/&lt;sha&gt;, snapshots/&lt;hash&gt;/&lt;file&gt; → ../../blobs/&lt;sha&gt;, refs/main}.</summary>
    private (string ModelFolder, string Snapshot) HubCache(string name)
    {
        string model = Path.Combine(_dir, "hub", name);
        const string hash = "4f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345";
        string snapshot = Path.Combine(model, "snapshots", hash);
        Directory.CreateDirectory(Path.Combine(model, "blobs"));
        Directory.CreateDirectory(Path.Combine(model, "refs"));
        Directory.CreateDirectory(snapshot);
        int n = 0;
        foreach (string f in Directory.GetFiles(Plain))
        {
            string blob = $"blob{n++:x8}deadbeef";
            File.Copy(f, Path.Combine(model, "blobs", blob));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(f)), Path.Combine("..", "..", "blobs", blob));
        }

        File.WriteAllText(Path.Combine(model, "refs", "main"), hash);
        return (model, snapshot);
    }
}

internal static class DisposableExtensions
{
    public static T Also<T>(this T value, Action<T> action)
    {
        action(value);
        return value;
    }
}
