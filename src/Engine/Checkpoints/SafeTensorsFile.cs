using System.Text.Json;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Checkpoints;

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record SafeTensorEntry(string Name, string DType, long[] Shape, long Begin, long End) : TensorInfo(Name, DType, Shape);

/// <summary>
/// Reads a safetensors file by streaming: the header is parsed and checked up front; each tensor is read
/// from the file straight into its own TorchSharp tensor's storage on request, so the whole file is never
/// held in one array and no mapped pages inflate the resident set (peak RSS stays near the weights' size).
/// </summary>
public sealed class SafeTensorsFile : ITensorSource
{
    private readonly FileStream _stream;
    private readonly long _dataStart;

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    private SafeTensorsFile(string path, FileStream stream, long dataStart,
        Dictionary<string, SafeTensorEntry> entries, Dictionary<string, string> metadata)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
        Tensors = entries.ToDictionary(e => e.Key, e => (TensorInfo)e.Value, StringComparer.Ordinal);
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"Checkpoint file not found: {path}", path);
        long length = CheckpointFolder.RealLength(path); // a hub-cache link's own length is that of its target's name
        if (length < 8) throw new ModelLoadException($"Corrupted safetensors file {path}: {length} bytes, too short for the 8-byte header length", path);
        byte[] headerBytes;
        using (var fs = File.OpenRead(path))
        {
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong headerLength = BitConverter.ToUInt64(lenBytes);
            if (headerLength == 0 || headerLength > (ulong)(length - 8) || headerLength > 100_000_000)
                throw new ModelLoadException($"Truncated or corrupted safetensors header in {path}: header length {headerLength} but the file has {length} bytes", path);
            headerBytes = new byte[headerLength];
            fs.ReadExactly(headerBytes);
        }
        long dataStart = 8 + headerBytes.Length;
        long dataLength = length - dataStart;
        var entries = new Dictionary<string, SafeTensorEntry>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>();
        try
        {
            using var doc = JsonDocument.Parse(headerBytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new JsonException("header is not a JSON object");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    foreach (var m in prop.Value.EnumerateObject()) metadata[m.Name] = m.Value.ToString();
                    continue;
                }
                var dtype = prop.Value.GetProperty("dtype").GetString() ?? "";
                var shape = prop.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                var offsets = prop.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                if (offsets.Length != 2) throw new ModelLoadException($"Corrupted safetensors header in {path}: key '{prop.Name}' has {offsets.Length} data_offsets", path, prop.Name);
                var type = SafeTensorsDType.Parse(dtype) ?? throw new ModelLoadException($"Unsupported dtype '{dtype}' for key '{prop.Name}' in {path}", path, prop.Name);
                long expected = shape.Aggregate(1L, (a, b) => a * b) * SafeTensorsDType.Size(type);
                if (offsets[0] < 0 || offsets[1] < offsets[0] || offsets[1] > dataLength)
                    throw new ModelLoadException($"Truncated or corrupted safetensors file {path}: key '{prop.Name}' spans bytes {offsets[0]}..{offsets[1]} of {dataLength}", path, prop.Name);
                if (offsets[1] - offsets[0] != expected)
                    throw new ModelLoadException($"Corrupted safetensors header in {path}: key '{prop.Name}' has shape [{string.Join(",", shape)}] {dtype} ({expected} bytes) but {offsets[1] - offsets[0]} bytes of data", path, prop.Name);
                entries[prop.Name] = new SafeTensorEntry(prop.Name, dtype, shape, offsets[0], offsets[1]);
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new ModelLoadException($"Truncated or corrupted safetensors header in {path}: {e.Message}", path, inner: e);
        }
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        return new SafeTensorsFile(path, stream, dataStart, entries, metadata);
    }

    /// <summary>Copies one tensor out of the mapped file; converts to <paramref name="dtype"/> when given.</summary>
    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        if (!Entries.TryGetValue(name, out var entry)) throw new ModelLoadException($"Key '{name}' is not in {Path}", Path, name);
        var type = SafeTensorsDType.Parse(entry.DType)!.Value;
        var tensor = empty(entry.Shape, type);
        long bytes = entry.End - entry.Begin;
        if (bytes > int.MaxValue)
            throw new ModelLoadException($"Key '{name}' in {Path} is {bytes} bytes; tensors over 2 GiB are not supported", Path, name);
        if (bytes > 0)
        {
            _stream.Position = _dataStart + entry.Begin;
            _stream.ReadExactly(tensor.bytes); // the span is the tensor's own native storage
        }
        return TensorSources.ConvertAndMove(tensor, dtype, device);
    }

    public void Dispose()
    {
        _stream.Dispose();
    }
}
