using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace AttributionFleet.Engine.Tokenization;

internal sealed record ByteLevelBpeSettings(
    bool AddPrefixSpace = false,    // add_prefix_space
    string BosToken = "<s>",        // cls_token / bos_token
    string EosToken = "</s>",       // sep_token / eos_token
    string UnkToken = "<unk>",
    string PadToken = "<pad>",
    string MaskToken = "<mask>",
    bool MaskLStrip = true);        // RoBERTa's <mask> takes the space before it

/// <summary>
/// GPT-2 style byte-level BPE as RoBERTa uses it, on <see cref="BpeTokenizer"/> (Microsoft.ML.Tokenizers) with
/// <see cref="BpeOptions.ByteLevel"/> and the GPT-2 split pattern. Offsets leave out the leading space that a
/// 'Ġ' token carries (Hugging Face's trim_offsets).
/// </summary>
internal sealed partial class ByteLevelBpeTextTokenizer : TextTokenizerBase
{
    // Hugging Face's ByteLevel pre-tokenizer pattern.
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2Split();

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<int, string> _idToToken;
    private readonly ByteLevelBpeSettings _settings;

    private ByteLevelBpeTextTokenizer(BpeTokenizer bpe, Dictionary<int, string> idToToken, int vocabSize,
        ByteLevelBpeSettings settings, int pad, int unk, int mask, int bos, int eos)
        : base(pad, unk, mask, bos, eos, vocabSize,
            [
                new SpecialToken(settings.BosToken, bos), new SpecialToken(settings.PadToken, pad),
                new SpecialToken(settings.EosToken, eos), new SpecialToken(settings.UnkToken, unk),
                new SpecialToken(settings.MaskToken, mask, settings.MaskLStrip),
            ])
    {
        _bpe = bpe;
        _idToToken = idToToken;
        _settings = settings;
    }

    /// <param name="vocab">token → id (vocab.json).</param>
    /// <param name="merges">The merge lines ("a b"), without the "#version" header.</param>
    internal static ByteLevelBpeTextTokenizer Create(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<string> merges,
        ByteLevelBpeSettings settings, string vocabPath, string mergesPath)
    {
        if (vocab.Count == 0)
        {
            throw new ModelLoadException($"The vocabulary '{vocabPath}' is empty.", vocabPath);
        }

        int Require(string token, string field) => vocab.TryGetValue(token, out int id)
            ? id
            : throw new ModelLoadException($"The vocabulary '{vocabPath}' has no {field} token '{token}'.", vocabPath, field);

        int bos = Require(settings.BosToken, "bos_token");
        int eos = Require(settings.EosToken, "eos_token");
        int unk = Require(settings.UnkToken, "unk_token");
        int pad = Require(settings.PadToken, "pad_token");
        int mask = Require(settings.MaskToken, "mask_token");

        var idToToken = new Dictionary<int, string>();
        foreach ((string token, int id) in vocab)
        {
            if (id < 0)
            {
                throw new ModelLoadException($"The vocabulary '{vocabPath}' gives '{token}' the negative id {id}.", vocabPath, token);
            }

            idToToken[id] = token;
        }

        for (int i = 0; i < merges.Count; i++)
        {
            if (merges[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Length != 2)
            {
                throw new ModelLoadException(
                    $"The merges file '{mergesPath}' has a bad rule at line {i + 1}: '{merges[i]}'.", mergesPath);
            }
        }

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                UnknownToken = settings.UnkToken,
                PreTokenizer = new RegexPreTokenizer(Gpt2Split(), specialTokens: null),
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new ModelLoadException($"The BPE files '{vocabPath}' and '{mergesPath}' cannot be loaded: {e.Message}",
                vocabPath, inner: e);
        }

        return new ByteLevelBpeTextTokenizer(bpe, idToToken, idToToken.Keys.Max() + 1, settings, pad, unk, mask, bos, eos);
    }

    public override string IdToToken(int id) => _idToToken.TryGetValue(id, out string? token)
        ? token
        : throw new ArgumentOutOfRangeException(nameof(id), id, "Not an id of this vocabulary.");

    protected override void EncodeSegment(string text, int start, int length, List<Piece> output)
    {
        string segment = text.Substring(start, length);
        int shift = 0;
        if (_settings.AddPrefixSpace && !char.IsWhiteSpace(segment[0]))
        {
            segment = " " + segment;
            shift = 1;
        }

        foreach (EncodedToken token in _bpe.EncodeToTokens(segment, out _))
        {
            (int from, int count) = token.Offset.GetOffsetAndLength(segment.Length);
            int to = from + count;
            // trim_offsets: leave out the whitespace that the token carries, unless it is all whitespace.
            int trimmedFrom = from;
            while (trimmedFrom < to && char.IsWhiteSpace(segment[trimmedFrom]))
            {
                trimmedFrom++;
            }

            if (trimmedFrom < to)
            {
                from = trimmedFrom;
            }

            from = Math.Max(from - shift, 0);
            to = Math.Max(to - shift, from);
            output.Add(new Piece(token.Id, token.Value, new TokenOffset(start + from, to - from)));
        }
    }
}
