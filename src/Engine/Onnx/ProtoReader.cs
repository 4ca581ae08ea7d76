namespace AttributionFleet.Engine.Onnx;

/// <summary>A protobuf message that ends early or holds a field the wire format does not allow.</summary>
internal sealed class ProtoFormatException(string message) : Exception(message);

/// <summary>Protobuf wire types (the low three bits of a field key).</summary>
internal enum WireType
{
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    StartGroup = 3,
    EndGroup = 4,
    Fixed32 = 5,
}

/// <summary>
/// Reads the protobuf wire format over a window <c>[start, end)</c> of a byte array: a sequence of
/// keys (varint <c>field &lt;&lt; 3 | wire type</c>) each followed by its value. Length-delimited values
/// come back as windows of the same array, so nested messages and tensor data are never copied.
/// Every read is bounds-checked; a value that runs past the window throws <see cref="ProtoFormatException"/>.
/// </summary>
internal struct ProtoReader
{
    private readonly byte[] _buffer;
    private readonly int _end;
    private int _pos;

    public ProtoReader(byte[] buffer) : this(buffer, 0, buffer.Length) { }

    public ProtoReader(byte[] buffer, int start, int length)
    {
        if (start < 0 || length < 0 || (long)start + length > buffer.Length)
            throw new ProtoFormatException($"window [{start}, {(long)start + length}) lies outside a buffer of {buffer.Length} bytes");
        _buffer = buffer;
        _pos = start;
        _end = start + length;
    }

    public ProtoReader(ProtoSlice slice) : this(slice.Buffer, slice.Start, slice.Length) { }

    public readonly bool AtEnd => _pos >= _end;

    /// <summary>Reads the next key; false at the end of the message.</summary>
    public bool TryReadKey(out int field, out WireType wireType)
    {
        if (_pos >= _end)
        {
            field = 0;
            wireType = default;
            return false;
        }
        ulong key = ReadVarint();
        field = (int)(key >> 3);
        wireType = (WireType)(key & 7);
        if (field <= 0 || key >> 3 > int.MaxValue)
            throw new ProtoFormatException($"invalid field number {key >> 3} at byte {_pos}");
        if (wireType is not (WireType.Varint or WireType.Fixed64 or WireType.LengthDelimited or WireType.Fixed32))
            throw new ProtoFormatException($"unsupported wire type {(int)wireType} for field {field} at byte {_pos}");
        return true;
    }

    public ulong ReadVarint()
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (_pos >= _end) throw new ProtoFormatException($"varint runs past the end of the message at byte {_pos}");
            byte b = _buffer[_pos++];
            result |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return result;
        }
        throw new ProtoFormatException($"varint longer than 10 bytes at byte {_pos}");
    }

    public uint ReadFixed32()
    {
        Require(4);
        uint v = BitConverter.ToUInt32(_buffer, _pos);
        _pos += 4;
        return v;
    }

    public ulong ReadFixed64()
    {
        Require(8);
        ulong v = BitConverter.ToUInt64(_buffer, _pos);
        _pos += 8;
        return v;
    }

    public float ReadFloat() => BitConverter.UInt32BitsToSingle(ReadFixed32());

    public double ReadDouble() => BitConverter.UInt64BitsToDouble(ReadFixed64());

    public ProtoSlice ReadLengthDelimited()
    {
        ulong length = ReadVarint();
        if (length > (ulong)(_end - _pos))
            throw new ProtoFormatException($"length-delimited field of {length} bytes runs past the end of the message ({_end - _pos} bytes left) at byte {_pos}");
        var slice = new ProtoSlice(_buffer, _pos, (int)length);
        _pos += (int)length;
        return slice;
    }

    public string ReadString() => ReadLengthDelimited().ToUtf8String();

    public void Skip(WireType wireType)
    {
        switch (wireType)
        {
            case WireType.Varint: ReadVarint(); break;
            case WireType.Fixed64: Require(8); _pos += 8; break;
            case WireType.Fixed32: Require(4); _pos += 4; break;
            case WireType.LengthDelimited: ReadLengthDelimited(); break;
            default: throw new ProtoFormatException($"cannot skip wire type {(int)wireType}");
        }
    }

    /// <summary>A repeated int64/int32 field: packed (one length-delimited run of varints) or not (one varint).</summary>
    public void ReadRepeatedVarint(WireType wireType, List<long> into)
    {
        if (wireType == WireType.Varint)
        {
            into.Add((long)ReadVarint());
            return;
        }
        if (wireType != WireType.LengthDelimited) throw new ProtoFormatException($"repeated varint field with wire type {(int)wireType}");
        var packed = new ProtoReader(ReadLengthDelimited());
        while (!packed.AtEnd) into.Add((long)packed.ReadVarint());
    }

    /// <summary>A repeated float field: packed (a run of fixed32) or not (one fixed32).</summary>
    public void ReadRepeatedFloat(WireType wireType, List<float> into)
    {
        if (wireType == WireType.Fixed32)
        {
            into.Add(ReadFloat());
            return;
        }
        if (wireType != WireType.LengthDelimited) throw new ProtoFormatException($"repeated float field with wire type {(int)wireType}");
        var packed = new ProtoReader(ReadLengthDelimited());
        while (!packed.AtEnd) into.Add(packed.ReadFloat());
    }

    /// <summary>A repeated double field: packed (a run of fixed64) or not (one fixed64).</summary>
    public void ReadRepeatedDouble(WireType wireType, List<double> into)
    {
        if (wireType == WireType.Fixed64)
        {
            into.Add(ReadDouble());
            return;
        }
        if (wireType != WireType.LengthDelimited) throw new ProtoFormatException($"repeated double field with wire type {(int)wireType}");
        var packed = new ProtoReader(ReadLengthDelimited());
        while (!packed.AtEnd) into.Add(packed.ReadDouble());
    }

    /// <summary>Throws unless the key just read has the wire type the schema gives the field.</summary>
    public static void Expect(int field, WireType actual, WireType expected)
    {
        if (actual != expected)
            throw new ProtoFormatException($"field {field} has wire type {(int)actual}, expected {(int)expected}");
    }

    private readonly void Require(int bytes)
    {
        if (_end - _pos < bytes)
            throw new ProtoFormatException($"fixed-width value of {bytes} bytes runs past the end of the message at byte {_pos}");
    }
}

/// <summary>A window of the file's bytes: a nested message or a field's raw value.</summary>
internal readonly record struct ProtoSlice(byte[] Buffer, int Start, int Length)
{
    public ReadOnlySpan<byte> Span => Buffer.AsSpan(Start, Length);

    public string ToUtf8String() => System.Text.Encoding.UTF8.GetString(Buffer, Start, Length);
}
