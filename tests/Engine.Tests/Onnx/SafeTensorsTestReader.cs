using System.Text.Json;

namespace AttributionFleet.Engine.Tests.Onnx;

/// <summary>A test-side safetensors reader, independent of the engine's writer: header entries and F32 data.</summary>
internal sealed class SafeTensorsTestReader
{
    public sealed record Entry(string DType, long[] Shape, long Begin, long End);

    private readonly string _path;
    private readonly long _dataStart;

    public IReadOnlyDictionary<string, Entry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public long FileLength { get; }

    public SafeTensorsTestReader(string path)
    {
        _path = path;
        using var stream = File.OpenRead(path);
        FileLength = stream.Length;
        var lengthBytes = new byte[8];
        stream.ReadExactly(lengthBytes);
        long headerLength = BitConverter.ToInt64(lengthBytes);
        if (headerLength <= 0 || headerLength > FileLength - 8) throw new InvalidDataException($"bad header length {headerLength}");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        _dataStart = 8 + headerLength;

        var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using var doc = JsonDocument.Parse(header);
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                foreach (var m in property.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString() ?? "";
                continue;
            }
            var offsets = property.Value.GetProperty("data_offsets");
            entries[property.Name] = new Entry(
                property.Value.GetProperty("dtype").GetString() ?? "",
                [.. property.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64())],
                offsets[0].GetInt64(),
                offsets[1].GetInt64());
        }
        Entries = entries;
        Metadata = metadata;
    }

    public long DataLength => FileLength - _dataStart;

    public float[] ReadF32(string name)
    {
        var entry = Entries[name];
        if (entry.DType != "F32") throw new InvalidDataException($"{name} is {entry.DType}");
        var bytes = new byte[entry.End - entry.Begin];
        using var stream = File.OpenRead(_path);
        stream.Position = _dataStart + entry.Begin;
        stream.ReadExactly(bytes);
        var values = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, values, 0, bytes.Length);
        return values;
    }
}
