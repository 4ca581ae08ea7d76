using System.Globalization;
using System.Text;
using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Tokenization;
using Xunit;

namespace AttributionFleet.Engine.Tests.Tokenization;

public class WordPieceTokenizerTests
{
    private static readonly Lazy<ITextTokenizer> MiniLm = new(() => TokenizerLoader.Load(MiniLmResources.SharedDir, "bert"));

    private static readonly Lazy<FastBertTokenizer.BertTokenizer> Reference = new(() =>
    {
        var tokenizer = new FastBertTokenizer.BertTokenizer();
        using StreamReader reader = File.OpenText(Path.Combine(MiniLmResources.SharedDir, "vocab.txt"));
        tokenizer.LoadVocabulary(reader, convertInputToLowercase: true);
        return tokenizer;
    });

    public static TheoryData<string> Sentences => new()
    {
        "Hello, World!",
        "The quick brown fox jumps over the lazy dog.",
        "Café résumé naïve",
        "ÉCOLE Über straße Ångström",
        "hello\tworld\nnew  line\r\nend",
        "   extra    spaces   around   ",
        "The year 2024 had 365.25 days; pi ≈ 3.14159.",
        "Prices: $1,299.99 (incl. 20% VAT) — or €1.099,00!",
        "I ❤️ emoji 😀🎉 a lot",
        "unbelievably antidisestablishmentarianism",
        "pneumonoultramicroscopicsilicovolcanoconiosis is a word",
        "中文字符测试",
        "Mixed 中文 and English text.",
        "don't won't it's you're we'll they'd",
        "e-mail: someone@example.com, url: https://example.org/a?b=c&d=e",
        "CamelCaseWords and snake_case_words",
        "Zürich, Köln, Malmö, São Paulo, Kraków",
        "Ελληνικά κείμενα και Русский текст",
        "\"Quoted\" text with «guillemets» and ‘curly quotes’",
        "<html><body>tags & entities &amp;</body></html>",
        "xyzzyplugh qwertyuiop asdfghjkl",
        "a.b.c.d...e!!!f???",
        "ALL CAPS SENTENCE WITH NUMBERS 123 456",
        "tabs\t\tand\u00A0non-breaking\u2003em spaces",
        "한국어 텍스트와 日本語のテキスト",
        "naïve coöperation façade",
        "",
    };
    // Not compared: "[MASK]" written in the text. Hugging Face (and this tokenizer) match it as the mask token;
    // FastBertTokenizer loaded from a bare vocab.txt splits it into "[", "mask", "]" (see MaskWrittenInTheTextIsTheMaskToken).

    [Theory]
    [MemberData(nameof(Sentences))]
    public void IdsEqualFastBertTokenizer(string text)
    {
        TokenizedText ours = MiniLm.Value.Encode(text, 512);
        (Memory<long> inputIds, _, _) = Reference.Value.Encode(text, 512);
        int[] expected = inputIds.ToArray().Select(id => (int)id).ToArray();

        Assert.Equal(expected, ours.Ids);
        Assert.False(ours.Truncated);
        Assert.Equal(ours.Ids.Length, ours.Tokens.Length);
        Assert.Equal(ours.Ids.Length, ours.Offsets.Length);
    }

    [Fact]
    public void KnownIdsForASimpleSentence()
    {
        // bert-base-uncased / all-MiniLM-L6-v2: [CLS] hello , world ! [SEP]
        Assert.Equal([101, 7592, 1010, 2088, 999, 102], MiniLm.Value.Encode("Hello, World!", 512).Ids);
    }

    [Fact]
    public void SpecialTokenIdsComeFromTheVocab()
    {
        ITextTokenizer t = MiniLm.Value;
        Assert.Equal(0, t.PadId);
        Assert.Equal(100, t.UnkId);
        Assert.Equal(101, t.StartId);
        Assert.Equal(102, t.EndId);
        Assert.Equal(103, t.MaskId);
        Assert.Equal(30522, t.VocabSize);
        Assert.Equal("[CLS]", t.IdToToken(101));
        Assert.True(t.IsSpecial(0) && t.IsSpecial(100) && t.IsSpecial(101) && t.IsSpecial(102) && t.IsSpecial(103));
        Assert.False(t.IsSpecial(7592));
    }

    [Fact]
    public void EmptyTextGivesTheTwoSpecialTokens()
    {
        TokenizedText encoded = MiniLm.Value.Encode("", 16);
        Assert.Equal([101, 102], encoded.Ids);
        Assert.Equal(["[CLS]", "[SEP]"], encoded.Tokens);
        Assert.False(encoded.Truncated);
    }

    [Fact]
    public void LongTextIsTruncatedToMaxLength()
    {
        string text = string.Join(" ", Enumerable.Repeat("The quick brown fox jumps over the lazy dog.", 20));
        TokenizedText encoded = MiniLm.Value.Encode(text, 16);

        Assert.Equal(16, encoded.Ids.Length);
        Assert.Equal(16, encoded.Tokens.Length);
        Assert.Equal(16, encoded.Offsets.Length);
        Assert.Equal(101, encoded.Ids[0]);
        Assert.Equal(102, encoded.Ids[^1]);
        Assert.True(encoded.Truncated);
        Assert.Equal(MiniLm.Value.Encode(text, 512).Ids[1..15], encoded.Ids[1..15]);
    }

    [Fact]
    public void ShortTextIsNotTruncated()
    {
        TokenizedText encoded = MiniLm.Value.Encode("A short one.", 16);
        Assert.Equal(6, encoded.Ids.Length); // [CLS] a short one . [SEP]
        Assert.False(encoded.Truncated);
    }

    [Fact]
    public void TextThatExactlyFitsIsNotTruncated()
    {
        TokenizedText encoded = MiniLm.Value.Encode("A short one.", 6);
        Assert.Equal(6, encoded.Ids.Length);
        Assert.False(encoded.Truncated);
        Assert.True(MiniLm.Value.Encode("A short one.", 5).Truncated);
    }

    [Theory]
    [MemberData(nameof(Sentences))]
    public void OffsetsPointAtTheTokensInTheOriginalText(string text)
    {
        ITextTokenizer t = MiniLm.Value;
        TokenizedText encoded = t.Encode(text, 512);
        Assert.Equal(default, encoded.Offsets[0]);
        Assert.Equal(default, encoded.Offsets[^1]);

        int previousEnd = 0;
        for (int i = 1; i < encoded.Ids.Length - 1; i++)
        {
            TokenOffset offset = encoded.Offsets[i];
            Assert.InRange(offset.Start, previousEnd, text.Length);
            Assert.InRange(offset.Length, 1, text.Length - offset.Start);
            previousEnd = offset.Start;

            string surface = text.Substring(offset.Start, offset.Length);
            string token = encoded.Tokens[i];
            if (encoded.Ids[i] == t.UnkId && token == "[UNK]" && surface != "[UNK]")
            {
                continue; // an unknown word: any text
            }

            // One original char can give several pieces (a Hangul syllable is decomposed into jamo), so the
            // surface contains the piece rather than equals it.
            Assert.Contains(Fold(token.StartsWith("##", StringComparison.Ordinal) ? token[2..] : token), Fold(surface), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void OffsetsOfAnAccentedSentence()
    {
        const string text = "Café  RÉSUMÉ\tnaïve";
        TokenizedText encoded = MiniLm.Value.Encode(text, 512);
        string[] surfaces = encoded.Offsets[1..^1].Select(o => text.Substring(o.Start, o.Length)).ToArray();
        Assert.Equal(["cafe", "resume", "naive"], encoded.Tokens[1..^1]);
        Assert.Equal(["Café", "RÉSUMÉ", "naïve"], surfaces);
    }

    [Fact]
    public void MaskWrittenInTheTextIsTheMaskToken()
    {
        TokenizedText encoded = MiniLm.Value.Encode("The [MASK] sat.", 512);
        Assert.Equal(103, encoded.Ids[2]);
        Assert.Equal(new TokenOffset(4, 6), encoded.Offsets[2]);
    }

    private static string Fold(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s.Normalize(NormalizationForm.FormD))
        {
            if (CharUnicodeInfo.GetUnicodeCategory(c) != UnicodeCategory.NonSpacingMark)
            {
                sb.Append(char.ToLowerInvariant(c));
            }
        }

        return sb.ToString();
    }
}
