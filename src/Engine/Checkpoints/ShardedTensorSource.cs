using System.Text.Json;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Checkpoints;

/// <summary>
/// A sharded checkpoint: an index (model.safetensors.index.json or pytorch_model.bin.index.json) whose
/// "weight_map" names the shard file of every tensor. Each shard is opened once; a tensor is read from its own
/// shard. Every shard the index names must exist and hold the tensors the index puts in it.
/// </summary>
public sealed class ShardedTensorSource : ITensorSource
{
    private readonly Dictionary<string, ITensorSource> _byTensor;
    private readonly List<ITensorSource> _shards;

    public string Path { get; }
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    private ShardedTensorSource(string path, List<ITensorSource> shards, Dictionary<string, ITensorSource> byTensor)
    {
        Path = path;
        _shards = shards;
        _byTensor = byTensor;
        Tensors = byTensor.ToDictionary(p => p.Key, p => p.Value.Tensors[p.Key], StringComparer.Ordinal);
    }

    /// <summary>The shard files an index names, in order, as full paths.</summary>
    public static IReadOnlyList<string> ShardFiles(string indexPath) =>
        ReadWeightMap(indexPath).Values.Distinct(StringComparer.Ordinal).Select(f => System.IO.Path.Combine(System.IO.Path.GetDirectoryName(indexPath)!, f)).ToList();

    public static ShardedTensorSource Open(string indexPath, Func<string, ITensorSource> openShard)
    {
        Dictionary<string, string> map = ReadWeightMap(indexPath);
        string dir = System.IO.Path.GetDirectoryName(indexPath)!;
        var shards = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
        var byTensor = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
        try
        {
            foreach (string file in map.Values.Distinct(StringComparer.Ordinal))
            {
                if (file.Contains('/') || file.Contains('\\') || file == ".." )
                    throw new ModelLoadException($"{indexPath} names the shard '{file}' outside its folder.", indexPath, "weight_map");
                string shardPath = System.IO.Path.Combine(dir, file);
                if (!File.Exists(shardPath))
                    throw new ModelLoadException($"{indexPath} names the shard {shardPath}, which does not exist (download every shard the index lists).", shardPath, "weight_map");
                shards[file] = openShard(shardPath);
            }

            var problems = new List<string>();
            foreach ((string tensor, string file) in map)
            {
                if (shards[file].Tensors.ContainsKey(tensor)) byTensor[tensor] = shards[file];
                else problems.Add($"'{tensor}' is not in {file}");
            }

            if (problems.Count > 0)
                throw new ModelLoadException($"{indexPath} does not match its shards: {string.Join("; ", problems.Take(5))}{(problems.Count > 5 ? $" and {problems.Count - 5} more" : "")}",
                    indexPath, "weight_map");
            return new ShardedTensorSource(indexPath, shards.Values.ToList(), byTensor);
        }
        catch
        {
            foreach (var s in shards.Values) s.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelLoadException($"{indexPath} has no \"weight_map\" object.", indexPath, "weight_map");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in map.EnumerateObject())
                result[p.Name] = p.Value.ValueKind == JsonValueKind.String
                    ? p.Value.GetString()!
                    : throw new ModelLoadException($"{indexPath}: the shard of '{p.Name}' is not a file name.", indexPath, "weight_map");
            if (result.Count == 0) throw new ModelLoadException($"{indexPath} has an empty \"weight_map\".", indexPath, "weight_map");
            return result;
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"{indexPath} cannot be read as JSON: {e.Message}", indexPath, inner: e);
        }
    }

    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null) =>
        _byTensor.TryGetValue(name, out var shard)
            ? shard.Load(name, dtype, device)
            : throw new ModelLoadException($"Key '{name}' is not in {Path}", Path, name);

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }
}
