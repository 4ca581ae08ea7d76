using System.Text;

namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>One code point of a normalized text and the span of the original text it came from.</summary>
/// <remarks>An inserted code point (a prefix space, a '▁') has an empty span where it was inserted.</remarks>
internal readonly record struct NChar(string Value, int Start, int End);

/// <summary>
/// A text as normalizers and pre-tokenizers see it: code points, each remembering where it came from in the
/// original text, so that the offsets of the final tokens point into the text the user gave (Hugging Face's
/// NormalizedString keeps the same alignments).
/// </summary>
internal sealed class NormalizedText
{
    public NormalizedText(List<NChar> chars) => Chars = chars;

    public List<NChar> Chars { get; }

    public int Count => Chars.Count;

    /// <summary>The code points of <c>text[start..start+length]</c>, each mapped to itself.</summary>
    public static NormalizedText FromOriginal(string text, int start, int length)
    {
        var chars = new List<NChar>(length);
        int end = start + length;
        for (int i = start; i < end;)
        {
            int n = char.IsHighSurrogate(text[i]) && i + 1 < end && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            chars.Add(new NChar(text.Substring(i, n), i, i + n));
            i += n;
        }

        return new NormalizedText(chars);
    }

    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (NChar c in Chars)
        {
            sb.Append(c.Value);
        }

        return sb.ToString();
    }

    public NormalizedText Slice(int from, int to) => new(Chars.GetRange(from, to - from));

    /// <summary>The original span covered by code points [from, to): inserted code points count only when nothing else is there.</summary>
    public TokenOffset Span(int from, int to)
    {
        int start = int.MaxValue, end = int.MinValue;
        for (int i = from; i < to; i++)
        {
            if (Chars[i].End > Chars[i].Start)
            {
                start = Math.Min(start, Chars[i].Start);
                end = Math.Max(end, Chars[i].End);
            }
        }

        if (start == int.MaxValue)
        {
            int at = to > from ? Chars[from].Start : 0;
            return new TokenOffset(at, 0);
        }

        return new TokenOffset(start, end - start);
    }

    /// <summary>Replaces every code point by the code points of <paramref name="map"/>'s result, which keep its span.</summary>
    public NormalizedText MapEach(Func<string, string> map)
    {
        var chars = new List<NChar>(Chars.Count);
        foreach (NChar c in Chars)
        {
            AddCodePoints(chars, map(c.Value), c.Start, c.End);
        }

        return new NormalizedText(chars);
    }

    /// <summary>Appends the code points of <paramref name="s"/>, all with the span [start, end).</summary>
    public static void AddCodePoints(List<NChar> chars, string s, int start, int end)
    {
        for (int k = 0; k < s.Length;)
        {
            int n = char.IsSurrogatePair(s, k) ? 2 : 1;
            chars.Add(new NChar(s.Substring(k, n), start, end));
            k += n;
        }
    }

    /// <summary>
    /// The concatenated value and, for each UTF-16 index of it, the code point it belongs to (one extra entry for
    /// the end), so that regex matches on the value map back to code points.
    /// </summary>
    public (string Value, int[] CharToIndex) Flatten()
    {
        var sb = new StringBuilder();
        var map = new List<int>();
        for (int i = 0; i < Chars.Count; i++)
        {
            sb.Append(Chars[i].Value);
            for (int k = 0; k < Chars[i].Value.Length; k++)
            {
                map.Add(i);
            }
        }

        map.Add(Chars.Count);
        return (sb.ToString(), map.ToArray());
    }
}
