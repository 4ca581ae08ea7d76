namespace AttributionFleet.Engine.Tokenization;

/// <summary>
/// One encoded text: ids with the model's special tokens, the token strings, and where each token lies in
/// <see cref="Text"/>. <see cref="Truncated"/> is true when content was cut to fit the requested length.
/// </summary>
public sealed record TokenizedText(string Text, int[] Ids, string[] Tokens, TokenOffset[] Offsets, bool Truncated);

/// <summary>Char offsets into <see cref="TokenizedText.Text"/>; the added special tokens get (0, 0).</summary>
public readonly record struct TokenOffset(int Start, int Length)
{
    public int End => Start + Length;
}
