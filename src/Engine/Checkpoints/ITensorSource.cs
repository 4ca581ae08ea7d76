using static TorchSharp.torch;

namespace AttributionFleet.Engine.Checkpoints;

/// <summary>Name, stored dtype and shape of one tensor of a checkpoint, known before its data is read.</summary>
public record TensorInfo(string Name, string DType, long[] Shape);

/// <summary>
/// The tensors of a checkpoint, read one at a time on request: one safetensors file today; sharded
/// safetensors and PyTorch pickles implement the same contract. Loaders depend only on this.
/// </summary>
public interface ITensorSource : IDisposable
{
    /// <summary>The file (or index) that error messages name.</summary>
    string Path { get; }

    IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>Reads one tensor, converted to <paramref name="dtype"/> and moved to <paramref name="device"/> when given.</summary>
    Tensor Load(string name, ScalarType? dtype = null, Device? device = null);
}

/// <summary>
/// Where a model folder keeps its weights. Every loader opens weights through here, so a new file layout
/// (shards, pickles, hub-cache snapshots) is added in one place.
/// </summary>
public static class CheckpointFolder
{
    public const string SafeTensorsFileName = "model.safetensors";

    /// <summary>The folder that holds config.json for what a user named (today: the folder itself).</summary>
    public static string Resolve(string path) => path;

    /// <summary>Opens the weights of a model folder.</summary>
    public static ITensorSource OpenWeights(string modelDir) => SafeTensorsFile.Open(System.IO.Path.Combine(modelDir, SafeTensorsFileName));

    /// <summary>Bytes of the weight files on disk, for memory budgets.</summary>
    public static long WeightBytes(string modelDir) => new FileInfo(System.IO.Path.Combine(modelDir, SafeTensorsFileName)).Length;
}
