using System.Text;

namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>
/// SentencePiece's precompiled normalization rules (normalizer_spec.precompiled_charsmap, and the "Precompiled"
/// normalizer of tokenizer.json): a darts-clone double-array trie over UTF-8 byte strings whose values are
/// offsets of NUL-terminated replacements. Layout: uint32 LE trie size in bytes, the trie's uint32 units, then
/// the replacement strings.
/// </summary>
internal sealed class PrecompiledCharsMap
{
    private readonly uint[] _units;
    private readonly byte[] _normalized;

    public PrecompiledCharsMap(byte[] blob, string source)
    {
        if (blob.Length < 4)
        {
            throw new ModelLoadException($"'{source}' has a precompiled_charsmap of {blob.Length} bytes, too short.", source, "precompiled_charsmap");
        }

        uint trieSize = BitConverter.ToUInt32(blob, 0);
        if (trieSize % 4 != 0 || trieSize > blob.Length - 4)
        {
            throw new ModelLoadException($"'{source}' has a corrupted precompiled_charsmap (trie of {trieSize} bytes in {blob.Length}).", source, "precompiled_charsmap");
        }

        _units = new uint[trieSize / 4];
        Buffer.BlockCopy(blob, 4, _units, 0, (int)trieSize);
        _normalized = blob[(4 + (int)trieSize)..];
    }

    public bool IsEmpty => _units.Length == 0;

    /// <summary>
    /// The longest rule that matches a prefix of <paramref name="utf8"/>[<paramref name="from"/>..]: its length in
    /// bytes and its replacement, or (0, null) when none does (darts-clone commonPrefixSearch).
    /// </summary>
    public (int Length, string? Replacement) LongestPrefix(byte[] utf8, int from)
    {
        if (_units.Length == 0)
        {
            return (0, null);
        }

        int bestLength = 0;
        uint bestValue = 0;
        uint nodePos = 0;
        uint unit = _units[0];
        nodePos ^= Offset(unit);
        for (int i = from; i < utf8.Length; i++)
        {
            byte c = utf8[i];
            nodePos ^= c;
            if (nodePos >= _units.Length)
            {
                break;
            }

            unit = _units[nodePos];
            if (Label(unit) != c)
            {
                break;
            }

            nodePos ^= Offset(unit);
            if (HasLeaf(unit) && nodePos < _units.Length)
            {
                bestLength = i - from + 1;
                bestValue = _units[nodePos] & 0x7FFFFFFFu;
            }
        }

        if (bestLength == 0 || bestValue >= _normalized.Length)
        {
            return (0, null);
        }

        int end = Array.IndexOf(_normalized, (byte)0, (int)bestValue);
        if (end < 0)
        {
            end = _normalized.Length;
        }

        return (bestLength, Encoding.UTF8.GetString(_normalized, (int)bestValue, end - (int)bestValue));
    }

    private static bool HasLeaf(uint unit) => ((unit >> 8) & 1) == 1;

    private static uint Label(uint unit) => unit & ((1u << 31) | 0xFF);

    private static uint Offset(uint unit) => (unit >> 10) << (int)((unit & (1u << 9)) >> 6);

    /// <summary>
    /// Applies the rules to <paramref name="text"/> as SentencePiece does: at each place the longest matching rule
    /// replaces its bytes, otherwise one code point is kept. Each output code point keeps the span it came from.
    /// </summary>
    public NormalizedText Apply(NormalizedText text)
    {
        // The UTF-8 bytes of the text, and for each byte the code point it belongs to.
        var bytes = new List<byte>();
        var owner = new List<int>();
        for (int i = 0; i < text.Count; i++)
        {
            foreach (byte b in Encoding.UTF8.GetBytes(text.Chars[i].Value))
            {
                bytes.Add(b);
                owner.Add(i);
            }
        }

        byte[] utf8 = bytes.ToArray();
        var output = new List<NChar>(text.Count);
        for (int p = 0; p < utf8.Length;)
        {
            (int length, string? replacement) = LongestPrefix(utf8, p);
            if (length == 0)
            {
                NChar c = text.Chars[owner[p]];
                output.Add(c);
                p += Encoding.UTF8.GetByteCount(c.Value);
                continue;
            }

            NChar first = text.Chars[owner[p]], last = text.Chars[owner[p + length - 1]];
            NormalizedText.AddCodePoints(output, replacement!, first.Start, Math.Max(first.End, last.End));
            p += length;
            // A rule that ends inside a code point: skip to the next code point's first byte.
            while (p < utf8.Length && owner[p] == owner[p - 1])
            {
                p++;
            }
        }

        return new NormalizedText(output);
    }
}
