using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Tokenization;
using Xunit;

namespace AttributionFleet.Engine.Tests.Tokenization;

public sealed class TokenizerLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("attributionfleet-tok-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] SmallVocab =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "hel", "##lo", "Hello", "!", "cafe", "café"];

    [Fact]
    public void MissingVocabTxtNamesTheFile()
    {
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "bert"));
        Assert.Contains("vocab.txt", e.Message);
        Assert.Equal(Path.Combine(_dir, "vocab.txt"), e.Path);
    }

    [Fact]
    public void MissingVocabJsonNamesTheFile()
    {
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "roberta"));
        Assert.Contains("vocab.json", e.Message);
    }

    [Fact]
    public void FolderWithoutAnyVocabNamesAFile()
    {
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "something-else"));
        Assert.Contains("vocab.txt", e.Message);
    }

    [Fact]
    public void EmptyVocabTxtNamesTheFile()
    {
        File.WriteAllText(Path.Combine(_dir, "vocab.txt"), "");
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "distilbert"));
        Assert.Contains("vocab.txt", e.Message);
    }

    [Fact]
    public void VocabWithoutSpecialTokensNamesTheFileAndToken()
    {
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), ["hello", "world"]);
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "bert"));
        Assert.Contains("vocab.txt", e.Message);
        Assert.Contains("[UNK]", e.Message);
    }

    [Fact]
    public void BinaryVocabNamesTheFile()
    {
        File.WriteAllBytes(Path.Combine(_dir, "vocab.txt"), [0xff, 0xfe, 0xfd, 0x80, 0x81, 0x0a]);
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "bert"));
        Assert.Contains("vocab.txt", e.Message);
    }

    [Fact]
    public void InvalidTokenizerConfigNamesTheFile()
    {
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), SmallVocab);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), "{ \"do_lower_case\": ");
        var e = Assert.Throws<ModelLoadException>(() => TokenizerLoader.Load(_dir, "bert"));
        Assert.Contains("tokenizer_config.json", e.Message);
    }

    [Fact]
    public void DoLowerCaseFalseKeepsCaseAndAccents()
    {
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), SmallVocab);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"),
            """{"do_lower_case": false, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}""");
        ITextTokenizer t = TokenizerLoader.Load(_dir, "bert");
        Assert.Equal(["[CLS]", "Hello", "[UNK]", "hello", "café", "[SEP]"], t.Encode("Hello HELLO hello café", 16).Tokens);
    }

    [Fact]
    public void UncasedByDefaultWithAccentsStripped()
    {
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), SmallVocab);
        ITextTokenizer t = TokenizerLoader.Load(_dir, "bert");
        Assert.Equal([2, 5, 6, 10, 11, 1, 3], t.Encode("HELLO World! Café Zebra", 16).Ids);
    }

    [Fact]
    public void UnknownModelTypeWithVocabTxtIsWordPiece()
    {
        MiniLmResources.ExtractTo(_dir);
        ITextTokenizer t = TokenizerLoader.Load(_dir, "");
        Assert.Equal([101, 7592, 102], t.Encode("hello", 8).Ids);
    }
}
