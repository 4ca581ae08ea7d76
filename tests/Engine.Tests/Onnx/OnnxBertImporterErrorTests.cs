using System.Text;
using AttributionFleet.Engine.Onnx;
using AttributionFleet.Engine.Tests.Support;
using Xunit;

namespace AttributionFleet.Engine.Tests.Onnx;

public sealed class OnnxBertImporterErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("onnx-import-errors-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Vocab()
    {
        var path = Path.Combine(_dir, "vocab.txt");
        File.WriteAllLines(path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]);
        return path;
    }

    [Fact]
    public void TruncatedOnnx_ThrowsModelLoadExceptionNamingTheFile()
    {
        var path = Path.Combine(_dir, "truncated.onnx");
        using (var source = File.OpenRead(MiniLmModel.OnnxPath))
        using (var target = File.Create(path))
        {
            var half = new byte[source.Length / 2];
            source.ReadExactly(half);
            target.Write(half);
        }
        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(path, MiniLmModel.VocabPath, Path.Combine(_dir, "out")));
        Assert.Equal(path, e.Path);
        Assert.Contains(path, e.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "out")));
    }

    [Fact]
    public void CorruptedOnnx_ThrowsModelLoadExceptionNamingTheFile()
    {
        var path = Path.Combine(_dir, "garbage.onnx");
        var bytes = new byte[4096];
        new Random(42).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(path, Vocab(), Path.Combine(_dir, "out")));
        Assert.Equal(path, e.Path);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void EmptyOnnx_ThrowsModelLoadExceptionSayingThereIsNoGraph()
    {
        var path = Path.Combine(_dir, "empty.onnx");
        File.WriteAllBytes(path, []);
        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(path, Vocab(), Path.Combine(_dir, "out")));
        Assert.Equal(path, e.Path);
        Assert.Contains("graph", e.Message);
    }

    [Fact]
    public void WellFormedOnnxWithoutBert_NamesTheMissingParameter()
    {
        // ModelProto { graph (7) { initializer (5) { dims 4, 2; data_type FLOAT; name; raw_data } } }
        var tensor = Concat(
            Varint(1, 4), Varint(1, 2), Varint(2, 1),
            Bytes(8, Encoding.UTF8.GetBytes("bert.embeddings.word_embeddings.weight")),
            Bytes(9, new byte[4 * 8]));
        var model = Concat(Varint(1, 8), Bytes(7, Bytes(5, tensor)));
        var path = Path.Combine(_dir, "tiny.onnx");
        File.WriteAllBytes(path, model);

        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(path, Vocab(), Path.Combine(_dir, "out")));
        Assert.Equal(path, e.Path);
        Assert.Equal("embeddings.position_embeddings.weight", e.Field);
        Assert.Contains("embeddings.position_embeddings.weight", e.Message);
    }

    [Fact]
    public void MissingVocabulary_ThrowsModelLoadExceptionNamingIt()
    {
        var missing = Path.Combine(_dir, "no-vocab.txt");
        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(MiniLmModel.OnnxPath, missing, Path.Combine(_dir, "out")));
        Assert.Equal(missing, e.Path);
    }

    private static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];

    private static byte[] Key(int field, int wireType) => VarintBytes((ulong)(field << 3 | wireType));

    private static byte[] Varint(int field, ulong value) => Concat(Key(field, 0), VarintBytes(value));

    private static byte[] Bytes(int field, byte[] payload) => Concat(Key(field, 2), VarintBytes((ulong)payload.Length), payload);

    private static byte[] VarintBytes(ulong value)
    {
        var bytes = new List<byte>();
        do
        {
            byte b = (byte)(value & 0x7F);
            value >>= 7;
            bytes.Add(value != 0 ? (byte)(b | 0x80) : b);
        } while (value != 0);
        return [.. bytes];
    }
}
