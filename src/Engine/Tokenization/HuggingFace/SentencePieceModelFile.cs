using System.Text;

namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>The type of a SentencePiece piece (sentencepiece_model.proto, SentencePiece.Type).</summary>
internal enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

/// <summary>One piece of a SentencePiece model.</summary>
internal readonly record struct SentencePiece(string Piece, float Score, PieceType Type);

/// <summary>
/// A SentencePiece model file (sentencepiece.bpe.model, spiece.model, spm.model): the serialized ModelProto, read
/// with a protobuf wire-format reader of its own (fields: 1 pieces, 2 trainer_spec, 3 normalizer_spec).
/// </summary>
internal sealed class SentencePieceModelFile
{
    public required string Path { get; init; }
    public required IReadOnlyList<SentencePiece> Pieces { get; init; }

    /// <summary>trainer_spec.model_type: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR.</summary>
    public int ModelType { get; init; } = 1;
    public int UnkId { get; init; }
    public bool ByteFallback { get; init; }
    public byte[] PrecompiledCharsMap { get; init; } = [];
    public bool AddDummyPrefix { get; init; } = true;
    public bool RemoveExtraWhitespaces { get; init; } = true;
    public bool EscapeWhitespaces { get; init; } = true;

    public static SentencePieceModelFile Read(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelLoadException($"The SentencePiece model '{path}' cannot be read: {e.Message}", path, inner: e);
        }

        try
        {
            var pieces = new List<SentencePiece>();
            int modelType = 1, unkId = 0;
            bool byteFallback = false, dummyPrefix = true, removeExtra = true, escape = true;
            byte[] charsMap = [];
            foreach ((int field, int wire, ulong value, ArraySegment<byte> data) in new ProtoReader(bytes).Fields())
            {
                switch (field)
                {
                    case 1 when wire == 2:
                        string piece = "";
                        float score = 0;
                        var type = PieceType.Normal;
                        foreach ((int f, int w, ulong v, ArraySegment<byte> d) in new ProtoReader(data).Fields())
                        {
                            if (f == 1 && w == 2) piece = Encoding.UTF8.GetString(d);
                            else if (f == 2 && w == 5) score = BitConverter.ToSingle(d);
                            else if (f == 3 && w == 0) type = (PieceType)(int)v;
                        }

                        pieces.Add(new SentencePiece(piece, score, type));
                        break;
                    case 2 when wire == 2:
                        foreach ((int f, int w, ulong v, _) in new ProtoReader(data).Fields())
                        {
                            if (f == 3 && w == 0) modelType = (int)v;
                            else if (f == 35 && w == 0) byteFallback = v != 0;
                            else if (f == 40 && w == 0) unkId = (int)v;
                        }

                        break;
                    case 3 when wire == 2:
                        foreach ((int f, int w, ulong v, ArraySegment<byte> d) in new ProtoReader(data).Fields())
                        {
                            if (f == 2 && w == 2) charsMap = d.ToArray();
                            else if (f == 3 && w == 0) dummyPrefix = v != 0;
                            else if (f == 4 && w == 0) removeExtra = v != 0;
                            else if (f == 5 && w == 0) escape = v != 0;
                        }

                        break;
                }
            }

            if (pieces.Count == 0)
            {
                throw new FormatException("it has no pieces");
            }

            return new SentencePieceModelFile
            {
                Path = path, Pieces = pieces, ModelType = modelType, UnkId = unkId, ByteFallback = byteFallback,
                PrecompiledCharsMap = charsMap, AddDummyPrefix = dummyPrefix, RemoveExtraWhitespaces = removeExtra, EscapeWhitespaces = escape,
            };
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException or ArgumentException)
        {
            throw new ModelLoadException($"'{path}' is not a SentencePiece model: {e.Message}", path, inner: e);
        }
    }

    /// <summary>Protobuf wire format: (field number, wire type, varint value, length-delimited or fixed bytes).</summary>
    private readonly struct ProtoReader(ArraySegment<byte> buffer)
    {
        public IEnumerable<(int Field, int Wire, ulong Value, ArraySegment<byte> Data)> Fields()
        {
            int i = 0;
            var b = buffer;
            ulong Varint()
            {
                ulong result = 0;
                for (int shift = 0; ; shift += 7)
                {
                    if (i >= b.Count || shift > 63) throw new FormatException("truncated varint");
                    byte x = b[i++];
                    result |= (ulong)(x & 0x7F) << shift;
                    if (x < 0x80) return result;
                }
            }

            ArraySegment<byte> Take(int n)
            {
                if (n < 0 || i + n > b.Count) throw new FormatException("truncated field");
                var s = b.Slice(i, n);
                i += n;
                return s;
            }

            while (i < b.Count)
            {
                ulong key = Varint();
                int field = (int)(key >> 3), wire = (int)(key & 7);
                switch (wire)
                {
                    case 0: yield return (field, wire, Varint(), default); break;
                    case 1: yield return (field, wire, 0, Take(8)); break;
                    case 2: int n = (int)Varint(); yield return (field, wire, 0, Take(n)); break;
                    case 5: yield return (field, wire, 0, Take(4)); break;
                    default: throw new FormatException($"unknown wire type {wire}");
                }
            }
        }
    }
}

/// <summary>
/// SentencePiece's own normalizer (normalizer.cc): the precompiled rules, then leading, trailing and repeated
/// whitespace dropped (remove_extra_whitespaces), a '▁' in front (add_dummy_prefix) and every space as '▁'
/// (escape_whitespaces).
/// </summary>
internal sealed record SentencePieceNormalizer(PrecompiledCharsMap Map, bool AddDummyPrefix, bool RemoveExtraWhitespaces, bool EscapeWhitespaces) : ITextNormalizer
{
    private const string SpaceSymbol = "\u2581";

    public NormalizedText Normalize(NormalizedText text)
    {
        List<NChar> mapped = Map.Apply(text).Chars;
        var output = new List<NChar>(mapped.Count + 1);
        int i = 0;
        if (RemoveExtraWhitespaces)
        {
            while (i < mapped.Count && mapped[i].Value == " ")
            {
                i++;
            }
        }

        if (i == mapped.Count)
        {
            return new NormalizedText(output);
        }

        if (AddDummyPrefix)
        {
            output.Add(new NChar(EscapeWhitespaces ? SpaceSymbol : " ", mapped[i].Start, mapped[i].Start));
        }

        bool previousSpace = RemoveExtraWhitespaces && AddDummyPrefix;
        for (; i < mapped.Count; i++)
        {
            bool space = mapped[i].Value == " ";
            if (space && previousSpace && RemoveExtraWhitespaces)
            {
                continue;
            }

            // The '▁' covers no text, so that a piece's offsets leave out the space before it.
            output.Add(space && EscapeWhitespaces ? mapped[i] with { Value = SpaceSymbol, End = mapped[i].Start } : mapped[i]);
            previousSpace = space;
        }

        if (RemoveExtraWhitespaces)
        {
            string space = EscapeWhitespaces ? SpaceSymbol : " ";
            while (output.Count > 0 && output[^1].Value == space)
            {
                output.RemoveAt(output.Count - 1);
            }
        }

        return new NormalizedText(output);
    }
}
