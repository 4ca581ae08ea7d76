using System.Text.Json;
using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Tokenization;
using Xunit;

namespace AttributionFleet.Engine.Tests.Tokenization;

public sealed class ByteLevelBpeTokenizerTests : IDisposable
{
    private static readonly string TinyRoberta = RepoPaths.Reference("tiny-roberta");
    private readonly string _dir = Directory.CreateTempSubdirectory("attributionfleet-bpe-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A hand-made GPT-2 style vocabulary whose merges build "Hello" and "Ġworld".</summary>
    private ITextTokenizer HandMade()
    {
        var vocab = new Dictionary<string, int> { ["<s>"] = 0, ["<pad>"] = 1, ["</s>"] = 2, ["<unk>"] = 3, ["<mask>"] = 4 };
        foreach (string t in new[] { "H", "e", "l", "o", "w", "r", "d", "!", "Ġ", "He", "Hel", "Hell", "Hello", "Ġw", "Ġwo", "Ġwor", "Ġworl", "Ġworld" })
        {
            vocab[t] = vocab.Count;
        }

        File.WriteAllText(Path.Combine(_dir, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(_dir, "merges.txt"),
            "#version: 0.2\nH e\nHe l\nHel l\nHell o\nĠ w\nĠw o\nĠwo r\nĠwor l\nĠworl d\n");
        return TokenizerLoader.Load(_dir, "roberta");
    }

    [Fact]
    public void TinyRobertaLoads()
    {
        ITextTokenizer t = TokenizerLoader.Load(TinyRoberta, "roberta");
        Assert.Equal(0, t.StartId);
        Assert.Equal(1, t.PadId);
        Assert.Equal(2, t.EndId);
        Assert.Equal(3, t.UnkId);
        Assert.Equal(4, t.MaskId);
        Assert.Equal(1000, t.VocabSize);
        Assert.Equal("tok5", t.IdToToken(5));
        Assert.True(t.IsSpecial(0) && t.IsSpecial(1) && t.IsSpecial(2) && t.IsSpecial(3) && t.IsSpecial(4));
        Assert.False(t.IsSpecial(5));
    }

    [Fact]
    public void TinyRobertaEncodesBetweenBosAndEos()
    {
        ITextTokenizer t = TokenizerLoader.Load(TinyRoberta, "roberta");
        TokenizedText encoded = t.Encode("Hello world", 16);
        Assert.Equal(0, encoded.Ids[0]);
        Assert.Equal(2, encoded.Ids[^1]);
        Assert.Equal("<s>", encoded.Tokens[0]);
        Assert.Equal("</s>", encoded.Tokens[^1]);
        Assert.True(encoded.Ids.Length > 2);
        Assert.All(encoded.Ids[1..^1], id => Assert.Equal(3, id)); // none of its byte symbols is in the vocab

        Assert.Equal([0, 2], t.Encode("", 16).Ids);
    }

    [Fact]
    public void HandMadeMergesGiveGpt2Tokens()
    {
        TokenizedText encoded = HandMade().Encode("Hello world", 16);
        Assert.Equal(["<s>", "Hello", "Ġworld", "</s>"], encoded.Tokens);
        Assert.Equal([0, 17, 22, 2], encoded.Ids);
        Assert.Equal(new TokenOffset(0, 5), encoded.Offsets[1]);
        Assert.Equal(new TokenOffset(6, 5), encoded.Offsets[2]); // "world": the space is trimmed off
        Assert.False(encoded.Truncated);
    }

    [Fact]
    public void HandMadeSplitsLikeGpt2()
    {
        ITextTokenizer t = HandMade();
        // "\s+(?!\S)" leaves the last space to the word: Hello, Ġ, Ġworld, !
        Assert.Equal(["<s>", "Hello", "Ġ", "Ġworld", "!", "</s>"], t.Encode("Hello  world!", 16).Tokens);
        // bytes not in the vocab are <unk>, each one
        Assert.Equal(["<s>", "H", "<unk>", "<unk>", "l", "l", "o", "</s>"], t.Encode("Héllo", 16).Tokens);
    }

    [Fact]
    public void HandMadeTruncates()
    {
        TokenizedText encoded = HandMade().Encode("Hello world Hello world Hello world", 4);
        Assert.Equal(["<s>", "Hello", "Ġworld", "</s>"], encoded.Tokens);
        Assert.True(encoded.Truncated);
    }

    [Fact]
    public void MaskInTheTextTakesTheSpaceBeforeIt()
    {
        TokenizedText encoded = HandMade().Encode("Hello <mask>!", 16);
        Assert.Equal([0, 17, 4, 12, 2], encoded.Ids);
    }

    [Fact]
    public void AddPrefixSpaceFromTokenizerConfig()
    {
        HandMade();
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"add_prefix_space": true, "model_max_length": 512}""");
        TokenizedText encoded = TokenizerLoader.Load(_dir, "roberta").Encode("world", 16);
        Assert.Equal(["<s>", "Ġworld", "</s>"], encoded.Tokens);
        Assert.Equal(new TokenOffset(0, 5), encoded.Offsets[1]);
    }

    [Fact]
    public void MissingMergesNamesTheFile()
    {
        HandMade();
        File.Delete(Path.Combine(_dir, "merges.txt"));
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "roberta"));
        Assert.Contains("merges.txt", e.Message);
    }

    [Fact]
    public void InvalidVocabJsonNamesTheFile()
    {
        HandMade();
        File.WriteAllText(Path.Combine(_dir, "vocab.json"), "{ not json");
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "roberta"));
        Assert.Contains("vocab.json", e.Message);
        Assert.Equal(Path.Combine(_dir, "vocab.json"), e.Path);
    }
}
