using System.IO.Compression;
using System.Text;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Checkpoints;

/// <summary>
/// A PyTorch checkpoint as torch.save writes it since 1.6 (pytorch_model.bin): a zip of <c>&lt;name&gt;/data.pkl</c>
/// (the state dict, pickled) and one <c>&lt;name&gt;/data/&lt;key&gt;</c> entry of raw little-endian data per storage.
/// The pickle is read by a restricted interpreter that knows only what a state dict needs
/// (<see cref="StateDictUnpickler"/>): a pickle that would call anything else is refused, never run. Each tensor's
/// data is read from its storage entry on request, straight into the tensor, so nothing is held twice.
/// </summary>
public sealed class PyTorchCheckpointFile : ITensorSource
{
    private readonly ZipArchive _zip;
    private readonly string _root; // the folder inside the zip ("pytorch_model/")
    private readonly Dictionary<string, StateDictUnpickler.TensorRef> _refs;

    public string Path { get; }
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    private PyTorchCheckpointFile(string path, ZipArchive zip, string root, Dictionary<string, StateDictUnpickler.TensorRef> refs)
    {
        Path = path;
        _zip = zip;
        _root = root;
        _refs = refs;
        Tensors = refs.ToDictionary(r => r.Key, r => new TensorInfo(r.Key, SafeTensorsDType.Name(r.Value.Storage.DType), r.Value.Shape), StringComparer.Ordinal);
    }

    public static PyTorchCheckpointFile Open(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"Checkpoint file not found: {path}", path);
        CheckpointFolder.RealPath(path); // a dangling hub-cache link: say so
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        try
        {
            Span<byte> magic = stackalloc byte[4];
            int read = stream.Read(magic);
            stream.Position = 0;
            if (read < 4 || magic[0] != (byte)'P' || magic[1] != (byte)'K')
            {
                throw new ModelLoadException(
                    $"{path} is not a zip-format PyTorch checkpoint (torch.save since PyTorch 1.6); the legacy format is not read here."
                    + " Re-save it with a current torch.save, or as model.safetensors.", path);
            }

            ZipArchive zip;
            try
            {
                zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: false);
            }
            catch (InvalidDataException e)
            {
                throw new ModelLoadException($"Corrupted PyTorch checkpoint {path}: {e.Message}", path, inner: e);
            }

            ZipArchiveEntry pkl = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal)
                    && e.FullName.Count(c => c == '/') <= 1)
                ?? throw new ModelLoadException($"Corrupted PyTorch checkpoint {path}: it has no data.pkl.", path);
            string root = pkl.FullName[..^"data.pkl".Length];
            if (zip.GetEntry(root + "byteorder") is { } order)
            {
                using var r = new StreamReader(order.Open());
                if (r.ReadToEnd().Trim() != "little")
                    throw new ModelLoadException($"{path} was saved big-endian; only little-endian checkpoints are read.", path, "byteorder");
            }

            byte[] pickle;
            using (var s = pkl.Open())
            using (var ms = new MemoryStream())
            {
                s.CopyTo(ms);
                pickle = ms.ToArray();
            }

            Dictionary<string, StateDictUnpickler.TensorRef> refs = StateDictUnpickler.Read(pickle, path);
            return new PyTorchCheckpointFile(path, zip, root, refs);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public Tensor Load(string name, ScalarType? dtype = null, Device? device = null)
    {
        if (!_refs.TryGetValue(name, out var r)) throw new ModelLoadException($"Key '{name}' is not in {Path}", Path, name);
        ScalarType type = r.Storage.DType;
        int elementSize = SafeTensorsDType.Size(type);
        long count = r.Shape.Aggregate(1L, (a, b) => a * b);
        bool contiguous = IsContiguous(r.Shape, r.Stride);
        // The storage elements this tensor reads: [offset, offset + span).
        long span = count == 0 ? 0 : 1 + r.Shape.Select((n, i) => (n - 1) * r.Stride[i]).Sum();
        if (r.Offset + span > r.Storage.Numel || r.Stride.Any(s => s < 0))
            throw new ModelLoadException($"Corrupted PyTorch checkpoint {Path}: key '{name}' reads past its storage '{r.Storage.Key}'.", Path, name);
        if (span * elementSize > int.MaxValue)
            throw new ModelLoadException($"Key '{name}' in {Path} is {span * elementSize} bytes; tensors over 2 GiB are not supported", Path, name);

        ZipArchiveEntry entry = _zip.GetEntry(_root + "data/" + r.Storage.Key)
            ?? throw new ModelLoadException($"Corrupted PyTorch checkpoint {Path}: storage '{r.Storage.Key}' of key '{name}' is missing.", Path, name);
        if (entry.Length < r.Storage.Numel * elementSize)
            throw new ModelLoadException($"Truncated PyTorch checkpoint {Path}: storage '{r.Storage.Key}' has {entry.Length} bytes, {r.Storage.Numel * elementSize} expected.", Path, name);

        Tensor tensor = contiguous ? empty(r.Shape, type) : empty(new[] { span }, type);
        if (span > 0)
        {
            using Stream s = entry.Open();
            Skip(s, r.Offset * elementSize);
            s.ReadExactly(tensor.bytes); // the span is the tensor's own native storage
        }

        if (!contiguous)
        {
            using var flat = tensor;
            using var view = flat.as_strided(r.Shape, r.Stride);
            tensor = view.contiguous();
        }

        return TensorSources.ConvertAndMove(tensor, dtype, device);
    }

    private static bool IsContiguous(long[] shape, long[] stride)
    {
        long expected = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] != 1 && stride[i] != expected) return false;
            expected *= shape[i];
        }

        return true;
    }

    private static void Skip(Stream s, long bytes)
    {
        if (bytes == 0) return;
        if (s.CanSeek)
        {
            s.Seek(bytes, SeekOrigin.Current);
            return;
        }

        byte[] buffer = new byte[Math.Min(bytes, 1 << 16)];
        while (bytes > 0)
        {
            int n = s.Read(buffer, 0, (int)Math.Min(buffer.Length, bytes));
            if (n <= 0) throw new EndOfStreamException();
            bytes -= n;
        }
    }

    public void Dispose() => _zip.Dispose();
}

/// <summary>
/// The subset of Python's pickle that torch.save uses for a state dict: dicts, lists, tuples, strings, numbers,
/// persistent storage ids, and calls of exactly these globals — collections.OrderedDict,
/// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the torch.*Storage types. Any other global
/// (os.system, builtins.eval, a user class) is refused with its name: it would be arbitrary code.
/// </summary>
internal static class StateDictUnpickler
{
    internal sealed record StorageRef(string Key, ScalarType DType, long Numel);

    internal sealed record TensorRef(StorageRef Storage, long Offset, long[] Shape, long[] Stride);

    private sealed record Global(string Module, string Name)
    {
        public string Full => Module + "." + Name;
    }

    private sealed class Mark;

    private sealed class OrderedDict : List<KeyValuePair<object?, object?>>;

    private static readonly Dictionary<string, ScalarType> StorageTypes = new()
    {
        ["FloatStorage"] = ScalarType.Float32, ["DoubleStorage"] = ScalarType.Float64, ["HalfStorage"] = ScalarType.Float16,
        ["BFloat16Storage"] = ScalarType.BFloat16, ["LongStorage"] = ScalarType.Int64, ["IntStorage"] = ScalarType.Int32,
        ["ShortStorage"] = ScalarType.Int16, ["CharStorage"] = ScalarType.Int8, ["ByteStorage"] = ScalarType.Byte,
        ["BoolStorage"] = ScalarType.Bool,
    };

    private static readonly HashSet<string> AllowedGlobals =
    [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        .. StorageTypes.Keys.Select(k => "torch." + k),
    ];

    public static Dictionary<string, TensorRef> Read(byte[] data, string path)
    {
        ModelLoadException Bad(string why) => new($"Cannot read the PyTorch checkpoint {path}: {why}", path);

        var stack = new List<object?>();
        var memo = new Dictionary<long, object?>();
        int pos = 0;

        byte U8() => pos < data.Length ? data[pos++] : throw Bad("the pickle is truncated");
        int I32() { if (pos + 4 > data.Length) throw Bad("the pickle is truncated"); int v = BitConverter.ToInt32(data, pos); pos += 4; return v; }
        string Str(int n) { if (n < 0 || pos + n > data.Length) throw Bad("the pickle is truncated"); string s = Encoding.UTF8.GetString(data, pos, n); pos += n; return s; }
        string Line() { int end = Array.IndexOf(data, (byte)'\n', pos); if (end < 0) throw Bad("the pickle is truncated"); string s = Encoding.UTF8.GetString(data, pos, end - pos); pos = end + 1; return s; }
        object? Pop() { if (stack.Count == 0) throw Bad("the pickle's stack underflows"); object? v = stack[^1]; stack.RemoveAt(stack.Count - 1); return v; }
        List<object?> PopToMark()
        {
            int m = stack.FindLastIndex(x => x is Mark);
            if (m < 0) throw Bad("the pickle has no MARK");
            var items = stack.GetRange(m + 1, stack.Count - m - 1);
            stack.RemoveRange(m, stack.Count - m);
            return items;
        }

        Global CheckGlobal(string module, string name)
        {
            var g = new Global(module, name);
            if (!AllowedGlobals.Contains(g.Full))
                throw new ModelLoadException(
                    $"The PyTorch checkpoint {path} needs '{g.Full}' to load, which would run code that is not part of a plain state dict; it is refused."
                    + " Load it in Python only if you trust it, and save it as model.safetensors.", path, g.Full);
            return g;
        }

        object? Call(object? callable, object? args)
        {
            if (callable is not Global g) throw Bad("the pickle calls something that is not a known global");
            object?[] a = args as object?[] ?? throw Bad($"the arguments of {g.Full} are not a tuple");
            switch (g.Full)
            {
                case "collections.OrderedDict":
                    return new OrderedDict();
                case "torch._utils._rebuild_tensor_v2":
                    if (a.Length < 4 || a[0] is not StorageRef storage) throw Bad("a tensor without its storage");
                    return new TensorRef(storage, Convert.ToInt64(a[1]), Longs(a[2]), Longs(a[3]));
                case "torch._utils._rebuild_parameter":
                    return a.Length > 0 && a[0] is TensorRef t ? t : throw Bad("a parameter without its tensor");
                default:
                    throw Bad($"{g.Full} cannot be called");
            }
        }

        long[] Longs(object? o) => o is object?[] t ? t.Select(x => Convert.ToInt64(x)).ToArray() : throw Bad("a shape that is not a tuple");

        while (true)
        {
            byte op = U8();
            switch (op)
            {
                case 0x80: U8(); break;                                     // PROTO
                case 0x95: pos += 8; break;                                 // FRAME
                case (byte)'.':                                             // STOP
                    object? result = Pop();
                    return Collect(result, Bad);
                case (byte)'}': stack.Add(new OrderedDict()); break;        // EMPTY_DICT
                case (byte)']': stack.Add(new List<object?>()); break;      // EMPTY_LIST
                case (byte)')': stack.Add(Array.Empty<object?>()); break;   // EMPTY_TUPLE
                case (byte)'(': stack.Add(new Mark()); break;               // MARK
                case (byte)'t': stack.Add(PopToMark().ToArray()); break;    // TUPLE
                case 0x85: stack.Add(new[] { Pop() }); break;               // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); stack.Add(new[] { a, b }); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); stack.Add(new[] { a, b, c }); break; }
                case (byte)'q': memo[U8()] = stack[^1]; break;              // BINPUT
                case (byte)'r': memo[(uint)I32()] = stack[^1]; break;       // LONG_BINPUT
                case 0x94: memo[memo.Count] = stack[^1]; break;             // MEMOIZE
                case (byte)'h': stack.Add(memo.TryGetValue(U8(), out var m1) ? m1 : throw Bad("a memo entry is missing")); break;
                case (byte)'j': stack.Add(memo.TryGetValue((uint)I32(), out var m4) ? m4 : throw Bad("a memo entry is missing")); break;
                case (byte)'X': stack.Add(Str(I32())); break;               // BINUNICODE
                case 0x8c: stack.Add(Str(U8())); break;                     // SHORT_BINUNICODE
                case (byte)'U': stack.Add(Str(U8())); break;                // SHORT_BINSTRING
                case (byte)'T': stack.Add(Str(I32())); break;               // BINSTRING
                case (byte)'K': stack.Add((long)U8()); break;               // BININT1
                case (byte)'M': { int lo = U8(), hi = U8(); stack.Add((long)(lo | (hi << 8))); break; }
                case (byte)'J': stack.Add((long)I32()); break;              // BININT
                case 0x8a:                                                  // LONG1
                {
                    int n = U8();
                    if (n > 8) throw Bad("an integer too large");
                    long v = 0;
                    for (int i = 0; i < n; i++) v |= (long)U8() << (8 * i);
                    if (n > 0 && n < 8 && (v & (1L << (8 * n - 1))) != 0) v -= 1L << (8 * n);
                    stack.Add(v);
                    break;
                }
                case (byte)'G':                                             // BINFLOAT (big-endian)
                {
                    if (pos + 8 > data.Length) throw Bad("the pickle is truncated");
                    byte[] b = data[pos..(pos + 8)];
                    Array.Reverse(b);
                    stack.Add(BitConverter.ToDouble(b));
                    pos += 8;
                    break;
                }
                case (byte)'N': stack.Add(null); break;
                case 0x88: stack.Add(true); break;
                case 0x89: stack.Add(false); break;
                case (byte)'c': { string module = Line(); string name = Line(); stack.Add(CheckGlobal(module, name)); break; }
                case 0x93: { var name = Pop() as string; var module = Pop() as string; stack.Add(CheckGlobal(module ?? "", name ?? "")); break; }
                case (byte)'Q':                                             // BINPERSID
                {
                    if (Pop() is not object?[] pid || pid.Length < 5 || pid[0] as string != "storage" || pid[1] is not Global st)
                        throw Bad("a persistent id that is not a tensor storage");
                    stack.Add(new StorageRef(pid[2] as string ?? throw Bad("a storage without a key"), StorageTypes[st.Name], Convert.ToInt64(pid[4])));
                    break;
                }
                case (byte)'R': { var args = Pop(); var callable = Pop(); stack.Add(Call(callable, args)); break; } // REDUCE
                case 0x81: { var args = Pop(); var cls = Pop(); stack.Add(Call(cls, args)); break; }                  // NEWOBJ
                case (byte)'b': Pop(); break;                               // BUILD: state of an OrderedDict (_metadata) or a parameter, not needed
                case (byte)'s': { var v = Pop(); var k = Pop(); AddItems(stack[^1], [k, v], Bad); break; }            // SETITEM
                case (byte)'u': { var items = PopToMark(); AddItems(stack[^1], items, Bad); break; }                  // SETITEMS
                case (byte)'a': { var v = Pop(); (stack[^1] as List<object?> ?? throw Bad("APPEND to a non-list")).Add(v); break; }
                case (byte)'e': { var items = PopToMark(); (stack[^1] as List<object?> ?? throw Bad("APPENDS to a non-list")).AddRange(items); break; }
                default:
                    throw Bad($"pickle opcode 0x{op:x2} at byte {pos - 1} is not one a state dict uses");
            }
        }
    }

    private static void AddItems(object? target, List<object?> items, Func<string, ModelLoadException> bad)
    {
        if (target is not OrderedDict dict) throw bad("SETITEM(S) on something that is not a dict");
        for (int i = 0; i + 1 < items.Count; i += 2) dict.Add(new(items[i], items[i + 1]));
    }

    /// <summary>The tensors of the state dict (nested dicts, as some trainers save, are flattened with dots).</summary>
    private static Dictionary<string, TensorRef> Collect(object? root, Func<string, ModelLoadException> bad)
    {
        var result = new Dictionary<string, TensorRef>(StringComparer.Ordinal);
        void Walk(object? node, string prefix)
        {
            if (node is not OrderedDict dict) return;
            foreach (var (k, v) in dict)
            {
                string key = prefix + (k as string ?? Convert.ToString(k, System.Globalization.CultureInfo.InvariantCulture));
                if (v is TensorRef t) result[key] = t;
                else if (v is OrderedDict) Walk(v, key + ".");
            }
        }

        if (root is not OrderedDict) throw bad("the pickle is not a state dict (a dict of tensors)");
        Walk(root, "");
        return result;
    }
}
