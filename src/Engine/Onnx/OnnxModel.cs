using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace AttributionFleet.Engine.Onnx;

/// <summary>
/// The part of an ONNX <c>ModelProto</c> that an importer needs: the main graph's nodes, initializers,
/// inputs and outputs. Field numbers follow onnx/onnx.proto:
/// ModelProto.graph = 7;
/// GraphProto node = 1, initializer = 5, input = 11, output = 12 (ValueInfoProto.name = 1);
/// NodeProto input = 1, output = 2, name = 3, op_type = 4, attribute = 5;
/// AttributeProto name = 1, f = 2, i = 3, t = 5, ints = 8, type = 20;
/// TensorProto dims = 1, data_type = 2, float_data = 4, int32_data = 5, int64_data = 7, name = 8,
/// raw_data = 9, double_data = 10, data_location = 14.
/// Every other field is skipped.
/// </summary>
internal sealed class OnnxGraph
{
    public required IReadOnlyList<OnnxNode> Nodes { get; init; }
    public required IReadOnlyList<OnnxTensor> Initializers { get; init; }
    public required IReadOnlyList<string> Inputs { get; init; }
    public required IReadOnlyList<string> Outputs { get; init; }

    /// <summary>Reads a whole .onnx file. Throws <see cref="ProtoFormatException"/> on a malformed or truncated file.</summary>
    public static OnnxGraph Read(byte[] file)
    {
        ProtoSlice? graph = null;
        var model = new ProtoReader(file);
        while (model.TryReadKey(out int field, out var wire))
        {
            if (field == 7)
            {
                ProtoReader.Expect(field, wire, WireType.LengthDelimited);
                graph = model.ReadLengthDelimited();
            }
            else model.Skip(wire);
        }
        if (graph is null) throw new ProtoFormatException("the file holds no ModelProto.graph (field 7)");
        return ReadGraph(graph.Value);
    }

    private static OnnxGraph ReadGraph(ProtoSlice slice)
    {
        var nodes = new List<OnnxNode>();
        var initializers = new List<OnnxTensor>();
        var inputs = new List<string>();
        var outputs = new List<string>();
        var r = new ProtoReader(slice);
        while (r.TryReadKey(out int field, out var wire))
        {
            switch (field)
            {
                case 1:
                    ProtoReader.Expect(field, wire, WireType.LengthDelimited);
                    nodes.Add(OnnxNode.Read(r.ReadLengthDelimited()));
                    break;
                case 5:
                    ProtoReader.Expect(field, wire, WireType.LengthDelimited);
                    initializers.Add(OnnxTensor.Read(r.ReadLengthDelimited()));
                    break;
                case 11:
                case 12:
                    ProtoReader.Expect(field, wire, WireType.LengthDelimited);
                    (field == 11 ? inputs : outputs).Add(ReadValueInfoName(r.ReadLengthDelimited()));
                    break;
                default:
                    r.Skip(wire);
                    break;
            }
        }
        return new OnnxGraph { Nodes = nodes, Initializers = initializers, Inputs = inputs, Outputs = outputs };
    }

    private static string ReadValueInfoName(ProtoSlice slice)
    {
        var r = new ProtoReader(slice);
        string name = "";
        while (r.TryReadKey(out int field, out var wire))
        {
            if (field == 1)
            {
                ProtoReader.Expect(field, wire, WireType.LengthDelimited);
                name = r.ReadString();
            }
            else r.Skip(wire);
        }
        return name;
    }
}

internal sealed class OnnxNode
{
    public required IReadOnlyList<string> Inputs { get; init; }
    public required IReadOnlyList<string> Outputs { get; init; }
    public required string Name { get; init; }
    public required string OpType { get; init; }
    public required IReadOnlyList<OnnxAttribute> Attributes { get; init; }

    public OnnxAttribute? Attribute(string name) => Attributes.FirstOrDefault(a => a.Name == name);

    public override string ToString() => $"{OpType} {Name} ({string.Join(", ", Inputs)}) -> ({string.Join(", ", Outputs)})";

    internal static OnnxNode Read(ProtoSlice slice)
    {
        var inputs = new List<string>();
        var outputs = new List<string>();
        var attributes = new List<OnnxAttribute>();
        string name = "", opType = "";
        var r = new ProtoReader(slice);
        while (r.TryReadKey(out int field, out var wire))
        {
            switch (field)
            {
                case 1: ProtoReader.Expect(field, wire, WireType.LengthDelimited); inputs.Add(r.ReadString()); break;
                case 2: ProtoReader.Expect(field, wire, WireType.LengthDelimited); outputs.Add(r.ReadString()); break;
                case 3: ProtoReader.Expect(field, wire, WireType.LengthDelimited); name = r.ReadString(); break;
                case 4: ProtoReader.Expect(field, wire, WireType.LengthDelimited); opType = r.ReadString(); break;
                case 5: ProtoReader.Expect(field, wire, WireType.LengthDelimited); attributes.Add(OnnxAttribute.Read(r.ReadLengthDelimited())); break;
                default: r.Skip(wire); break;
            }
        }
        return new OnnxNode { Inputs = inputs, Outputs = outputs, Name = name, OpType = opType, Attributes = attributes };
    }
}

internal sealed class OnnxAttribute
{
    public required string Name { get; init; }
    /// <summary>AttributeProto.AttributeType: 1 FLOAT, 2 INT, 4 TENSOR, 7 INTS, ... (0 when absent).</summary>
    public int Type { get; init; }
    public float? F { get; init; }
    public long? I { get; init; }
    public OnnxTensor? T { get; init; }
    public IReadOnlyList<long> Ints { get; init; } = [];

    internal static OnnxAttribute Read(ProtoSlice slice)
    {
        string name = "";
        int type = 0;
        float? f = null;
        long? i = null;
        OnnxTensor? t = null;
        var ints = new List<long>();
        var r = new ProtoReader(slice);
        while (r.TryReadKey(out int field, out var wire))
        {
            switch (field)
            {
                case 1: ProtoReader.Expect(field, wire, WireType.LengthDelimited); name = r.ReadString(); break;
                case 2: ProtoReader.Expect(field, wire, WireType.Fixed32); f = r.ReadFloat(); break;
                case 3: ProtoReader.Expect(field, wire, WireType.Varint); i = (long)r.ReadVarint(); break;
                case 5: ProtoReader.Expect(field, wire, WireType.LengthDelimited); t = OnnxTensor.Read(r.ReadLengthDelimited()); break;
                case 8: r.ReadRepeatedVarint(wire, ints); break;
                case 20: ProtoReader.Expect(field, wire, WireType.Varint); type = (int)r.ReadVarint(); break;
                default: r.Skip(wire); break;
            }
        }
        return new OnnxAttribute { Name = name, Type = type, F = f, I = i, T = t, Ints = ints };
    }
}

/// <summary>A TensorProto. The data stays a window of the file until asked for in a given element type.</summary>
internal sealed class OnnxTensor
{
    public const int Float = 1, Int32 = 6, Int64 = 7, Float16 = 10, Double = 11;

    public required string Name { get; init; }
    public required IReadOnlyList<long> Dims { get; init; }
    public required int DataType { get; init; }
    /// <summary>raw_data (little-endian, fixed width), when the tensor uses it.</summary>
    public ProtoSlice? Raw { get; init; }
    public IReadOnlyList<float> FloatData { get; init; } = [];
    public IReadOnlyList<long> IntData { get; init; } = [];
    public IReadOnlyList<double> DoubleData { get; init; } = [];
    /// <summary>TensorProto.data_location = EXTERNAL (1): the data lives in another file.</summary>
    public bool External { get; init; }
    /// <summary>TensorProto.external_data: "location" (a path relative to the model file), "offset", "length".</summary>
    public IReadOnlyDictionary<string, string> ExternalData { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// This tensor with its external data read from <c>location</c> (relative to <paramref name="modelDir"/>) at
    /// <c>offset</c> for <c>length</c> bytes (the whole rest of the file without a length), as raw_data.
    /// </summary>
    public OnnxTensor WithExternalData(string modelDir)
    {
        if (!External) return this;
        if (!ExternalData.TryGetValue("location", out var location) || location.Length == 0)
            throw new ProtoFormatException($"tensor '{Name}' is marked external but names no 'location'");
        var path = System.IO.Path.GetFullPath(System.IO.Path.Combine(modelDir, location));
        if (!File.Exists(path))
            throw new ProtoFormatException($"tensor '{Name}' keeps its data in '{path}', which does not exist (copy the external data file beside the .onnx file)");
        long offset = ExternalData.TryGetValue("offset", out var o) ? long.Parse(o, System.Globalization.CultureInfo.InvariantCulture) : 0;
        using var file = File.OpenRead(path);
        long length = ExternalData.TryGetValue("length", out var l) ? long.Parse(l, System.Globalization.CultureInfo.InvariantCulture) : file.Length - offset;
        if (offset < 0 || length < 0 || offset + length > file.Length || length > Array.MaxLength)
            throw new ProtoFormatException($"tensor '{Name}': offset {offset} + length {length} lies outside '{path}' ({file.Length} bytes)");
        var bytes = new byte[length];
        file.Position = offset;
        file.ReadExactly(bytes);
        return new OnnxTensor
        {
            Name = Name, Dims = Dims, DataType = DataType, Raw = new ProtoSlice(bytes, 0, (int)length),
            FloatData = FloatData, IntData = IntData, DoubleData = DoubleData,
        };
    }

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Dims) n *= d;
            return n;
        }
    }

    public string ShapeText => "[" + string.Join(", ", Dims) + "]";

    public bool IsFloatingPoint => DataType is Float or Double or Float16;

    internal static OnnxTensor Read(ProtoSlice slice)
    {
        var dims = new List<long>();
        int dataType = 0;
        string name = "";
        ProtoSlice? raw = null;
        bool external = false;
        var externalData = new Dictionary<string, string>();
        var floats = new List<float>();
        var ints = new List<long>();
        var doubles = new List<double>();
        var r = new ProtoReader(slice);
        while (r.TryReadKey(out int field, out var wire))
        {
            switch (field)
            {
                case 1: r.ReadRepeatedVarint(wire, dims); break;
                case 2: ProtoReader.Expect(field, wire, WireType.Varint); dataType = (int)r.ReadVarint(); break;
                case 4: r.ReadRepeatedFloat(wire, floats); break;
                case 5: // int32_data: varints of int32 (negative values are sign-extended to 64 bits)
                case 7: r.ReadRepeatedVarint(wire, ints); break;
                case 8: ProtoReader.Expect(field, wire, WireType.LengthDelimited); name = r.ReadString(); break;
                case 9: ProtoReader.Expect(field, wire, WireType.LengthDelimited); raw = r.ReadLengthDelimited(); break;
                case 10: r.ReadRepeatedDouble(wire, doubles); break;
                case 13: ProtoReader.Expect(field, wire, WireType.LengthDelimited); ReadEntry(r.ReadLengthDelimited(), externalData); break;
                case 14: ProtoReader.Expect(field, wire, WireType.Varint); external = r.ReadVarint() == 1; break;
                default: r.Skip(wire); break;
            }
        }
        if (dataType == Int32 || dataType == Float16)
            for (int k = 0; k < ints.Count; k++) ints[k] = (int)ints[k];
        return new OnnxTensor
        {
            Name = name, Dims = dims, DataType = dataType, Raw = raw, External = external, ExternalData = externalData,
            FloatData = floats, IntData = ints, DoubleData = doubles,
        };
    }

    /// <summary>A StringStringEntryProto (key = 1, value = 2).</summary>
    private static void ReadEntry(ProtoSlice slice, Dictionary<string, string> into)
    {
        string key = "", value = "";
        var r = new ProtoReader(slice);
        while (r.TryReadKey(out int field, out var wire))
        {
            if (field == 1) { ProtoReader.Expect(field, wire, WireType.LengthDelimited); key = r.ReadString(); }
            else if (field == 2) { ProtoReader.Expect(field, wire, WireType.LengthDelimited); value = r.ReadString(); }
            else r.Skip(wire);
        }
        into[key] = value;
    }

    /// <summary>The elements as float32, converting from float64/float16/int types where needed.</summary>
    public float[] ToFloats()
    {
        long count = CheckedCount();
        if (DataType == Float && Raw is { } raw)
        {
            CheckRawLength(raw, count, 4);
            var result = new float[count];
            raw.Span.CopyTo(MemoryMarshal.AsBytes(result.AsSpan()));
            if (!BitConverter.IsLittleEndian)
                for (int k = 0; k < result.Length; k++)
                    result[k] = BinaryPrimitives.ReadSingleLittleEndian(raw.Span[(4 * k)..]);
            return result;
        }
        if (DataType == Float)
        {
            CheckListLength(FloatData.Count, count);
            return [.. FloatData];
        }
        return Array.ConvertAll(ToDoubles(), d => (float)d);
    }

    /// <summary>The elements as float64 (any supported numeric type).</summary>
    public double[] ToDoubles()
    {
        long count = CheckedCount();
        var result = new double[count];
        if (Raw is { } raw)
        {
            int size = DataType switch
            {
                Float or Int32 => 4,
                Int64 or Double => 8,
                Float16 => 2,
                _ => throw Unsupported(),
            };
            CheckRawLength(raw, count, size);
            var s = raw.Span;
            for (int k = 0; k < count; k++)
            {
                var e = s.Slice(k * size, size);
                result[k] = DataType switch
                {
                    Float => BinaryPrimitives.ReadSingleLittleEndian(e),
                    Int32 => BinaryPrimitives.ReadInt32LittleEndian(e),
                    Int64 => BinaryPrimitives.ReadInt64LittleEndian(e),
                    Double => BinaryPrimitives.ReadDoubleLittleEndian(e),
                    _ => (double)BinaryPrimitives.ReadHalfLittleEndian(e),
                };
            }
            return result;
        }
        switch (DataType)
        {
            case Float:
                CheckListLength(FloatData.Count, count);
                for (int k = 0; k < count; k++) result[k] = FloatData[k];
                break;
            case Double:
                CheckListLength(DoubleData.Count, count);
                for (int k = 0; k < count; k++) result[k] = DoubleData[k];
                break;
            case Int32 or Int64:
                CheckListLength(IntData.Count, count);
                for (int k = 0; k < count; k++) result[k] = IntData[k];
                break;
            case Float16:
                CheckListLength(IntData.Count, count);
                for (int k = 0; k < count; k++) result[k] = (double)BitConverter.UInt16BitsToHalf((ushort)IntData[k]);
                break;
            default:
                throw Unsupported();
        }
        return result;
    }

    /// <summary>The elements as int64 (integer types exactly; floating point only where integral).</summary>
    public long[] ToInt64s()
    {
        if (DataType is Int64 or Int32 && Raw is null)
        {
            long count = CheckedCount();
            CheckListLength(IntData.Count, count);
            return [.. IntData];
        }
        if (DataType == Int64 && Raw is { } raw)
        {
            long count = CheckedCount();
            CheckRawLength(raw, count, 8);
            var result = new long[count];
            for (int k = 0; k < count; k++) result[k] = BinaryPrimitives.ReadInt64LittleEndian(raw.Span[(8 * k)..]);
            return result;
        }
        var doubles = ToDoubles();
        var longs = new long[doubles.Length];
        for (int k = 0; k < doubles.Length; k++)
        {
            if (doubles[k] != Math.Floor(doubles[k])) throw new ProtoFormatException($"tensor '{Name}' holds a non-integral value {doubles[k]}");
            longs[k] = (long)doubles[k];
        }
        return longs;
    }

    private long CheckedCount()
    {
        if (External) throw new ProtoFormatException($"tensor '{Name}' keeps its data in an external file, which is not supported");
        long count = ElementCount;
        if (count < 0 || count > Array.MaxLength) throw new ProtoFormatException($"tensor '{Name}' has an invalid shape {ShapeText}");
        return count;
    }

    private void CheckRawLength(ProtoSlice raw, long count, int size)
    {
        if (raw.Length != count * size)
            throw new ProtoFormatException($"tensor '{Name}' of shape {ShapeText} has {raw.Length} bytes of raw_data, expected {count * size}");
    }

    private void CheckListLength(int actual, long count)
    {
        if (actual != count)
            throw new ProtoFormatException($"tensor '{Name}' of shape {ShapeText} has {actual} elements, expected {count}");
    }

    private ProtoFormatException Unsupported() =>
        new($"tensor '{Name}' has data type {DataType}, which the importer does not read");
}
