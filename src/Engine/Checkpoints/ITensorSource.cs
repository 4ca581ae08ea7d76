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
/// Where a model folder keeps its weights. Every loader opens weights through here, so a new file layout is added
/// in one place. Layouts, in the order they are looked for: model.safetensors, model.safetensors.index.json
/// (shards), pytorch_model.bin (torch.save zip), pytorch_model.bin.index.json. Files may be symbolic links, as in
/// a Hugging Face hub cache, whose snapshot folders hold links into blobs/.
/// </summary>
public static class CheckpointFolder
{
    public const string SafeTensorsFileName = "model.safetensors";
    public const string SafeTensorsIndexFileName = "model.safetensors.index.json";
    public const string PyTorchFileName = "pytorch_model.bin";
    public const string PyTorchIndexFileName = "pytorch_model.bin.index.json";

    /// <summary>The weight files looked for, in order.</summary>
    public static readonly string[] WeightFileNames = [SafeTensorsFileName, SafeTensorsIndexFileName, PyTorchFileName, PyTorchIndexFileName];

    /// <summary>
    /// The folder that holds config.json for what a user named: the folder itself, or, for a Hugging Face hub cache
    /// model folder (models--org--name, with refs/ and snapshots/), the snapshot that refs/main names (the only
    /// snapshot when there is no refs/main). A folder without config.json is returned as it is, for the loader to report.
    /// </summary>
    public static string Resolve(string path)
    {
        if (!Directory.Exists(path) || File.Exists(System.IO.Path.Combine(path, "config.json"))) return path;
        string snapshots = System.IO.Path.Combine(path, "snapshots");
        if (!Directory.Exists(snapshots)) return path;
        string refMain = System.IO.Path.Combine(path, "refs", "main");
        if (File.Exists(refMain))
        {
            string hash = File.ReadAllText(refMain).Trim();
            string snapshot = System.IO.Path.Combine(snapshots, hash);
            if (hash.Length == 0 || hash.IndexOfAny(['/', '\\']) >= 0 || !Directory.Exists(snapshot))
                throw new ModelLoadException($"{refMain} names the snapshot '{hash}', which is not in {snapshots}; download the model again.", refMain);
            return snapshot;
        }

        string[] all = Directory.GetDirectories(snapshots);
        return all.Length switch
        {
            1 => all[0],
            0 => throw new ModelLoadException($"The hub cache folder {path} has no snapshot in {snapshots}; download the model again.", path),
            _ => throw new ModelLoadException(
                $"The hub cache folder {path} has {all.Length} snapshots and no refs/main: name one of them ({string.Join(", ", all.Select(System.IO.Path.GetFileName))}) with --model.", path),
        };
    }

    /// <summary>Opens the weights of a model folder.</summary>
    public static ITensorSource OpenWeights(string modelDir)
    {
        string Full(string name) => System.IO.Path.Combine(modelDir, name);
        if (File.Exists(Full(SafeTensorsFileName))) return SafeTensorsFile.Open(Full(SafeTensorsFileName));
        if (File.Exists(Full(SafeTensorsIndexFileName))) return ShardedTensorSource.Open(Full(SafeTensorsIndexFileName), SafeTensorsFile.Open);
        if (File.Exists(Full(PyTorchFileName))) return PyTorchCheckpointFile.Open(Full(PyTorchFileName));
        if (File.Exists(Full(PyTorchIndexFileName))) return ShardedTensorSource.Open(Full(PyTorchIndexFileName), PyTorchCheckpointFile.Open);
        throw new ModelLoadException(NotFoundMessage(modelDir), Full(SafeTensorsFileName));
    }

    /// <summary>Bytes of the weight files on disk (of their targets, for links), for memory budgets.</summary>
    public static long WeightBytes(string modelDir)
    {
        string Full(string name) => System.IO.Path.Combine(modelDir, name);
        if (File.Exists(Full(SafeTensorsFileName))) return RealLength(Full(SafeTensorsFileName));
        if (File.Exists(Full(SafeTensorsIndexFileName))) return ShardedTensorSource.ShardFiles(Full(SafeTensorsIndexFileName)).Where(File.Exists).Sum(RealLength);
        if (File.Exists(Full(PyTorchFileName))) return RealLength(Full(PyTorchFileName));
        if (File.Exists(Full(PyTorchIndexFileName))) return ShardedTensorSource.ShardFiles(Full(PyTorchIndexFileName)).Where(File.Exists).Sum(RealLength);
        throw new ModelLoadException(NotFoundMessage(modelDir), Full(SafeTensorsFileName));
    }

    /// <summary>The length of the file a path names, following symbolic links (a link's own length is that of its target's name).</summary>
    public static long RealLength(string path) => new FileInfo(RealPath(path)).Length;

    /// <summary>The final target of a chain of symbolic links, or the path itself.</summary>
    public static string RealPath(string path)
    {
        try
        {
            FileSystemInfo? target = File.ResolveLinkTarget(path, returnFinalTarget: true);
            if (target is null) return path;
            if (!target.Exists)
                throw new ModelLoadException($"{path} is a link to {target.FullName}, which does not exist (an incomplete download?).", path);
            return target.FullName;
        }
        catch (IOException e)
        {
            throw new ModelLoadException($"{path} is a symbolic link that cannot be followed: {e.Message}", path, inner: e);
        }
    }

    private static string NotFoundMessage(string modelDir)
    {
        string message = $"model.safetensors not found in {modelDir}: looked for {string.Join(", ", WeightFileNames)}.";
        if (Directory.Exists(modelDir))
        {
            string[] files = Directory.GetFiles(modelDir).Select(System.IO.Path.GetFileName).ToArray()!;
            if (files.Any(f => f.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)))
                message += " The folder has an ONNX file: convert it with `fleet import-onnx`.";
            else if (files.Any(f => f is "tf_model.h5" or "flax_model.msgpack"))
                message += " TensorFlow and Flax weights are not read: save the model with PyTorch (save_pretrained with safe_serialization).";
        }

        return message;
    }
}

/// <summary>What every <see cref="ITensorSource"/> does with a tensor it has read in its stored dtype on the CPU.</summary>
internal static class TensorSources
{
    /// <summary>
    /// Converts <paramref name="tensor"/> to <paramref name="dtype"/> and moves it to <paramref name="device"/> when given,
    /// disposing each intermediate, so a checkpoint never holds a tensor twice.
    /// </summary>
    public static Tensor ConvertAndMove(Tensor tensor, ScalarType? dtype, Device? device)
    {
        if (dtype is { } target && target != tensor.dtype)
        {
            var converted = tensor.to_type(target);
            tensor.Dispose();
            tensor = converted;
        }
        if (device is not null && device.type != TorchSharp.DeviceType.CPU)
        {
            var moved = tensor.to(device);
            tensor.Dispose();
            tensor = moved;
        }
        return tensor;
    }
}
