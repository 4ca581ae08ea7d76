using System.Text.Json;
using System.Text.Json.Nodes;
using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Tokenization;
using Xunit;

namespace AttributionFleet.Engine.Tests.Tokenization;

/// <summary>A folder whose tokenizer is tokenizer.json: the whole Hugging Face pipeline comes from that file.</summary>
public sealed class TokenizerJsonTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("attributionfleet-tokjson-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] SmallVocab =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "hel", "##lo", "Hello", "!", "cafe", "café"];

    private static string BpeFixture => Path.Combine(RepoPaths.Root, "tests", "fixtures", "tokenizers", "bpe");

    private ITextTokenizer Load(JsonObject tokenizer, string modelType = "bert")
    {
        TokenizerJsonFiles.Write(_dir, tokenizer);
        return TokenizerLoader.Load(_dir, modelType);
    }

    [Fact]
    public void CasedTokenizerJsonWithoutTokenizerConfigKeepsCase()
    {
        // The silent case of issue #11: lowercase: false in tokenizer.json, no tokenizer_config.json.
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: false));
        TokenizedText e = t.Encode("Hello HELLO hello café", 16);
        Assert.Equal(["[CLS]", "Hello", "[UNK]", "hello", "café", "[SEP]"], e.Tokens);
        Assert.Equal([2, 9, 1, 5, 12, 3], e.Ids);
    }

    [Fact]
    public void UncasedTokenizerJsonLowercasesAndStripsAccents()
    {
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: true));
        Assert.Equal([2, 5, 5, 5, 11, 3], t.Encode("Hello HELLO hello café", 16).Ids);
    }

    [Fact]
    public void CasedWithAccentsStrippedWhenTheFileSaysSo()
    {
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: false, stripAccents: true));
        Assert.Equal(["[CLS]", "Hello", "cafe", "[SEP]"], t.Encode("Hello café", 16).Tokens);
    }

    [Fact]
    public void ExplicitDoLowerCaseInTokenizerConfigOverridesTheNormalizerAsBertTokenizerFastDoes()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"do_lower_case": true}""");
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: false));
        Assert.Equal(["[CLS]", "hello", "hello", "[SEP]"], t.Encode("Hello HELLO", 16).Tokens);
    }

    [Fact]
    public void TokenizerJsonWinsOverVocabTxt()
    {
        // vocab.txt alone would give the uncased default; tokenizer.json says cased.
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), SmallVocab);
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: false));
        Assert.Equal(["[CLS]", "Hello", "[SEP]"], t.Encode("Hello", 16).Tokens);
    }

    [Fact]
    public void StartAndEndIdsComeFromThePostProcessor()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(SmallVocab, lowercase: true);
        // A template whose start token is [MASK]'s neighbour "hel" would be odd but legal: the ids must follow the file.
        tok["post_processor"] = TokenizerJsonFiles.Template("[SEP]", 3, "[CLS]", 2);
        ITextTokenizer t = Load(tok);
        Assert.Equal(3, t.StartId);
        Assert.Equal(2, t.EndId);
        Assert.Equal([3, 5, 2], t.Encode("hello", 8).Ids);
        Assert.Equal(0, t.PadId);
        Assert.Equal(4, t.MaskId);
    }

    [Fact]
    public void BertProcessingGivesClsAndSep()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(SmallVocab, lowercase: true);
        tok["post_processor"] = JsonNode.Parse("""{"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}""");
        Assert.Equal([2, 5, 6, 3], Load(tok).Encode("hello world", 8).Ids);
    }

    [Fact]
    public void WordPieceSplitsAndOffsetsPointIntoTheText()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hel", "##lo", "world", "!"], lowercase: true);
        TokenizedText e = Load(tok).Encode("HeLLo,  World!", 16);
        Assert.Equal(["[CLS]", "hel", "##lo", "[UNK]", "world", "!", "[SEP]"], e.Tokens);
        Assert.Equal(["HeL", "Lo", ",", "World", "!"], e.Offsets[1..^1].Select(o => "HeLLo,  World!".Substring(o.Start, o.Length)));
    }

    [Fact]
    public void NormalizedAddedTokenIsMatchedAfterLowercasing()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(SmallVocab, lowercase: true);
        tok["added_tokens"]!.AsArray().Add(TokenizerJsonFiles.Added(13, "newtok", special: false, normalized: true));
        TokenizedText e = Load(tok).Encode("hello NEWTOK world", 16);
        Assert.Equal([2, 5, 13, 6, 3], e.Ids);
        Assert.Equal("NEWTOK", e.Text.Substring(e.Offsets[2].Start, e.Offsets[2].Length));
    }

    [Fact]
    public void SpecialTokenWrittenInTheTextIsMatchedOnTheRawText()
    {
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: true));
        Assert.Equal([2, 5, 4, 6, 3], t.Encode("hello [MASK] world", 16).Ids);
        Assert.Equal([2, 1, 1, 1, 3], t.Encode("[mask]", 16).Ids); // not normalized: matched case-sensitively on the raw text
    }

    [Fact]
    public void NormalizerSequenceWithNfkcReplaceAndStripKeepsOffsets()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "fi", "##ne"], lowercase: true);
        tok["normalizer"] = JsonNode.Parse("""
            {"type": "Sequence", "normalizers": [
              {"type": "NFKC"}, {"type": "Lowercase"},
              {"type": "Replace", "pattern": {"String": "_"}, "content": " "},
              {"type": "Strip", "strip_left": true, "strip_right": true}]}
            """);
        tok["pre_tokenizer"] = JsonNode.Parse("""{"type": "Whitespace"}""");
        const string text = "  Ｈｅｌｌｏ_WORLD ﬁne ";
        TokenizedText e = Load(tok).Encode(text, 16);
        Assert.Equal(["[CLS]", "hello", "world", "fi", "##ne", "[SEP]"], e.Tokens);
        Assert.Equal(["Ｈｅｌｌｏ", "WORLD", "ﬁ", "ne"], e.Offsets[1..^1].Select(o => text.Substring(o.Start, o.Length)));
    }

    [Fact]
    public void SplitPreTokenizerWithRegexAndBehavior()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "-b", "c", "-"], lowercase: true);
        tok["pre_tokenizer"] = JsonNode.Parse("""
            {"type": "Split", "pattern": {"Regex": "-"}, "behavior": "MergedWithNext", "invert": false}
            """);
        Assert.Equal(["[CLS]", "a", "-b", "[UNK]", "[SEP]"], Load(tok).Encode("a-b-cd", 16).Tokens);
    }

    [Fact]
    public void NmtNormalizerAndCharDelimiterSplit()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b c", "d"], lowercase: true);
        tok["normalizer"] = JsonNode.Parse("""{"type": "Nmt"}""");
        tok["pre_tokenizer"] = JsonNode.Parse("""{"type": "CharDelimiterSplit", "delimiter": "|"}""");
        // \u0001 is dropped, the tab becomes a space, '|' separates.
        Assert.Equal(["[CLS]", "a", "b c", "d", "[SEP]"], Load(tok).Encode("a\u0001|b\tc|d", 16).Tokens);
    }

    [Fact]
    public void UnsupportedNormalizerNamesTheFileAndTheType()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(SmallVocab, lowercase: true);
        tok["normalizer"] = JsonNode.Parse("""{"type": "ByteLevelMagic"}""");
        var e = Assert.Throws<ModelLoadException>(() => Load(tok));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("ByteLevelMagic", e.Message);
    }

    [Fact]
    public void MissingPostProcessorIsRefusedNotGuessed()
    {
        JsonObject tok = TokenizerJsonFiles.Bert(SmallVocab, lowercase: true);
        tok.Remove("post_processor");
        var e = Assert.Throws<ModelLoadException>(() => Load(tok));
        Assert.Contains("post_processor", e.Message);
    }

    [Fact]
    public void InvalidJsonNamesTheFile()
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), "{ \"model\": ");
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "bert"));
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void FolderWithOnlyTokenizerJsonAndUnknownModelTypeLoads()
    {
        ITextTokenizer t = Load(TokenizerJsonFiles.Bert(SmallVocab, lowercase: false), modelType: "");
        Assert.Equal([2, 9, 10, 3], t.Encode("Hello!", 8).Ids);
    }

    // ---- WordPiece against an independent implementation: MiniLM's vocabulary and FastBertTokenizer ----

    private static readonly Lazy<string> MiniLmTokenizerJsonDir = new(() =>
    {
        // Beside the test binaries (rewritten each run), not in /tmp: nothing is left behind.
        string dir = Path.Combine(AppContext.BaseDirectory, "minilm-tokenizer-json");
        Directory.CreateDirectory(dir);
        string[] vocab = File.ReadAllLines(Path.Combine(MiniLmResources.SharedDir, "vocab.txt"));
        TokenizerJsonFiles.Write(dir, TokenizerJsonFiles.Bert(vocab, lowercase: true));
        return dir;
    });

    private static readonly Lazy<ITextTokenizer> MiniLmJson = new(() => TokenizerLoader.Load(MiniLmTokenizerJsonDir.Value, "bert"));
    private static readonly Lazy<ITextTokenizer> MiniLmVocabTxt = new(() => TokenizerLoader.Load(MiniLmResources.SharedDir, "bert"));

    private static readonly Lazy<FastBertTokenizer.BertTokenizer> FastBert = new(() =>
    {
        var tokenizer = new FastBertTokenizer.BertTokenizer();
        using StreamReader reader = File.OpenText(Path.Combine(MiniLmResources.SharedDir, "vocab.txt"));
        tokenizer.LoadVocabulary(reader, convertInputToLowercase: true);
        return tokenizer;
    });

    [Theory]
    [MemberData(nameof(WordPieceTokenizerTests.Sentences), MemberType = typeof(WordPieceTokenizerTests))]
    public void MiniLmTokenizerJsonIdsEqualFastBertTokenizerAndOffsetsEqualVocabTxt(string text)
    {
        TokenizedText ours = MiniLmJson.Value.Encode(text, 512);
        (Memory<long> inputIds, _, _) = FastBert.Value.Encode(text, 512);
        Assert.Equal(inputIds.ToArray().Select(id => (int)id).ToArray(), ours.Ids);
        Assert.Equal(MiniLmVocabTxt.Value.Encode(text, 512).Offsets, ours.Offsets);
    }

    [Fact]
    public void MiniLmTokenizerJsonTruncatesLikeVocabTxt()
    {
        const string text = "the quick brown fox jumps over the lazy dog again and again";
        Assert.Equal(MiniLmVocabTxt.Value.Encode(text, 6), MiniLmJson.Value.Encode(text, 6), new TokenizedComparer());
    }

    // ---- byte-level BPE against the vocab.json + merges.txt tokenizer (Microsoft.ML.Tokenizers' BPE) ----

    public static TheoryData<string> BpeSentences => new()
    {
        "Hello world!",
        "The licensee may copy and distribute the Program's source code.",
        "  leading spaces and trailing  ",
        "multiple     spaces\tand\ttabs\nnewlines",
        "Numbers 12345 and 3.14159, dates 2024-03-01",
        "The café on the Straße served crème brûlée.",
        "Привет, как дела?",
        "Emoji 😀🎉 and 中文",
        "don't you're we'll they'd it's",
        "e-mail: someone@example.com https://example.org/a?b=1",
        "a <mask> in the text",
        "<s>specials</s> written",
        "",
    };

    [Theory]
    [MemberData(nameof(BpeSentences))]
    public void ByteLevelBpeTokenizerJsonEqualsVocabJsonAndMerges(string text)
    {
        var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(Path.Combine(BpeFixture, "vocab.json")))!;
        string[] merges = File.ReadAllLines(Path.Combine(BpeFixture, "merges.txt")).Where(l => l.Length > 0 && !l.StartsWith("#version")).ToArray();
        ITextTokenizer json = Load(TokenizerJsonFiles.Roberta(vocab, merges), "roberta");
        ITextTokenizer files = TokenizerLoader.Load(BpeFixture, "roberta");

        TokenizedText a = json.Encode(text, 512), b = files.Encode(text, 512);
        Assert.Equal(b.Ids, a.Ids);
        Assert.Equal(b.Tokens, a.Tokens);
        if (!text.Any(char.IsSurrogate))
        {
            Assert.Equal(b.Offsets, a.Offsets);
        }
        else
        {
            // The byte tokens of a code point outside the BMP cover both of its UTF-16 halves here (the vocab.json
            // tokenizer gives them one half, which cuts the character when pieces are merged into words).
            for (int i = 1; i < a.Ids.Length - 1; i++)
            {
                TokenOffset o = a.Offsets[i];
                Assert.False(char.IsLowSurrogate(text[o.Start]), $"token {i} starts inside a surrogate pair");
                Assert.False(char.IsHighSurrogate(text[o.End - 1]), $"token {i} ends inside a surrogate pair");
            }
        }
    }

    [Fact]
    public void ByteLevelBpeHandMadeMerges()
    {
        var vocab = new Dictionary<string, int> { ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3, ["<mask>"] = 4 };
        foreach (string t in new[] { "H", "e", "l", "o", "w", "r", "d", "!", "Ġ", "He", "Hel", "Hell", "Hello", "Ġw", "Ġwo", "Ġwor", "Ġworl", "Ġworld" })
        {
            vocab[t] = vocab.Count;
        }

        string[] merges = ["H e", "He l", "Hel l", "Hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l", "Ġworl d"];
        TokenizedText e = Load(TokenizerJsonFiles.Roberta(vocab, merges), "roberta").Encode("Hello world!", 16);
        Assert.Equal(["<s>", "Hello", "Ġworld", "!", "</s>"], e.Tokens);
        Assert.Equal([0, 17, 22, 12, 2], e.Ids);
        Assert.Equal(new TokenOffset(6, 5), e.Offsets[2]); // "world" without the space (trim_offsets)

        TokenizedText prefixed = Load(TokenizerJsonFiles.Roberta(vocab, merges, addPrefixSpace: true), "roberta").Encode("world", 16);
        Assert.Equal(["<s>", "Ġworld", "</s>"], prefixed.Tokens);
        Assert.Equal(new TokenOffset(0, 5), prefixed.Offsets[1]);
    }

    private sealed class TokenizedComparer : IEqualityComparer<TokenizedText>
    {
        public bool Equals(TokenizedText? x, TokenizedText? y) =>
            x is not null && y is not null && x.Ids.SequenceEqual(y.Ids) && x.Tokens.SequenceEqual(y.Tokens)
            && x.Offsets.SequenceEqual(y.Offsets) && x.Truncated == y.Truncated;

        public int GetHashCode(TokenizedText obj) => obj.Ids.Length;
    }
}
