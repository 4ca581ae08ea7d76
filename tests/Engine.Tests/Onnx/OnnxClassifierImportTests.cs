using System.Text;
using System.Text.Json;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Onnx;
using AttributionFleet.Engine.Tests.Models;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Onnx;

/// <summary>
/// Classifiers exported by PyTorch 1.13's torch.onnx.export (tests/fixtures/architectures/onnx-*, from generate.py)
/// import with their heads, each family's positions and token types, to the logits of the original module within 1e-5.
/// </summary>
public sealed class OnnxClassifierImportTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-onnx-cls-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("onnx-bert", "vocab.txt", "BertForSequenceClassification")]
    [InlineData("onnx-bert-opset17", "vocab.txt", "BertForSequenceClassification")]
    [InlineData("onnx-distilbert", "vocab.txt", "DistilBertForSequenceClassification")]
    [InlineData("onnx-roberta", "vocab.json", "RobertaForSequenceClassification")]
    public void ClassifierExportImportsToTheOriginalLogits(string fixture, string vocab, string architecture)
    {
        var folder = ArchitectureFixtures.Folder(fixture);
        var outDir = Path.Combine(_dir, fixture);
        var report = OnnxBertImporter.Import(Path.Combine(folder, "model.onnx"), Path.Combine(folder, vocab), outDir);
        Assert.Equal(architecture, report.Architecture);
        Assert.Equal(3, report.Labels);
        Assert.Equal(4, report.Heads);

        var (ids, mask, l32, _) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(outDir);
        Assert.Equal(architecture, model.Config.Architecture);
        double diff = (model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>();
        output.WriteLine($"{fixture}: {report}; max |logits − original| {diff:E2}");
        Assert.True(l32.abs().max().item<double>() > 0.05, "reference logits should not be trivially small");
        Assert.True(diff <= 1e-5, $"max |logits − original| = {diff:E3}");
    }

    [Fact]
    public void RobertaImportKeepsItsPadIdAndPositions()
    {
        var folder = ArchitectureFixtures.Folder("onnx-roberta");
        var outDir = Path.Combine(_dir, "roberta");
        OnnxBertImporter.Import(Path.Combine(folder, "model.onnx"), Path.Combine(folder, "vocab.json"), outDir);
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        Assert.Equal("roberta", config.RootElement.GetProperty("model_type").GetString());
        Assert.Equal(1, config.RootElement.GetProperty("pad_token_id").GetInt32());
        Assert.Equal(1e-5, config.RootElement.GetProperty("layer_norm_eps").GetDouble());
        Assert.True(File.Exists(Path.Combine(outDir, "merges.txt")));
        Assert.False(ReadLowerCase(outDir));
    }

    /// <summary>A RoBERTa-body export given a SentencePiece model is XLM-R: the model file is copied, pad id 1, cased.</summary>
    [Fact]
    public void RobertaBodyWithSentencePieceVocabularyIsXlmRoberta()
    {
        var folder = ArchitectureFixtures.Folder("onnx-roberta");
        var outDir = Path.Combine(_dir, "xlmr");
        var report = OnnxBertImporter.Import(Path.Combine(folder, "model.onnx"),
            Path.Combine(ArchitectureFixtures.Folder("xlm-roberta"), "sentencepiece.bpe.model"), outDir);
        Assert.Equal("XLMRobertaForSequenceClassification", report.Architecture);
        Assert.True(File.Exists(Path.Combine(outDir, "sentencepiece.bpe.model")));
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("onnx-roberta");
        using var model = ModelLoader.Load(outDir);
        Assert.Equal("xlm-roberta", model.Config.ModelType);
        Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
    }

    [Fact]
    public void CasingComesFromTheFilesGiven()
    {
        var folder = ArchitectureFixtures.Folder("onnx-bert");
        var onnx = Path.Combine(folder, "model.onnx");
        string Case(string name, Action<string> setup)
        {
            var given = Path.Combine(_dir, "given-" + name);
            Directory.CreateDirectory(given);
            File.Copy(Path.Combine(folder, "vocab.txt"), Path.Combine(given, "vocab.txt"));
            setup(given);
            return given;
        }
        // Nothing but an uncased vocabulary: lower-cased.
        var plain = Case("plain", _ => { });
        Assert.True(OnnxBertImporter.Import(onnx, Path.Combine(plain, "vocab.txt"), Path.Combine(_dir, "o1")).LowerCase);
        Assert.True(ReadLowerCase(Path.Combine(_dir, "o1")));
        // A cased tokenizer.json beside vocab.txt (normalizer lowercase: false), without tokenizer_config.json.
        var cased = Case("cased-json", d => File.WriteAllText(Path.Combine(d, "tokenizer.json"), TokenizerJson(lowercase: false, d)));
        var report = OnnxBertImporter.Import(onnx, Path.Combine(cased, "vocab.txt"), Path.Combine(_dir, "o2"));
        Assert.False(report.LowerCase);
        Assert.False(ReadLowerCase(Path.Combine(_dir, "o2")));
        // tokenizer_config.json says so.
        var config = Case("config", d => File.WriteAllText(Path.Combine(d, "tokenizer_config.json"), "{\"do_lower_case\": false}"));
        Assert.False(OnnxBertImporter.Import(onnx, Path.Combine(config, "vocab.txt"), Path.Combine(_dir, "o3")).LowerCase);
        // tokenizer.json given as the vocabulary: copied, casing from its normalizer.
        var asVocab = Case("as-vocab", d => File.WriteAllText(Path.Combine(d, "tokenizer.json"), TokenizerJson(lowercase: false, d)));
        var r4 = OnnxBertImporter.Import(onnx, Path.Combine(asVocab, "tokenizer.json"), Path.Combine(_dir, "o4"));
        Assert.False(r4.LowerCase);
        Assert.True(File.Exists(Path.Combine(_dir, "o4", "tokenizer.json")));
        // A vocabulary with upper-case tokens and no other file: cased.
        var upper = Case("upper", d => File.AppendAllLines(Path.Combine(d, "vocab.txt"), Array.Empty<string>()));
        var lines = File.ReadAllLines(Path.Combine(upper, "vocab.txt"));
        lines[10] = "The";
        File.WriteAllLines(Path.Combine(upper, "vocab.txt"), lines);
        Assert.False(OnnxBertImporter.Import(onnx, Path.Combine(upper, "vocab.txt"), Path.Combine(_dir, "o5")).LowerCase);
    }

    [Fact]
    public void QuantizedExportIsRefusedSayingWhy()
    {
        // ModelProto { graph { node { input a, b; output c; op_type MatMulInteger } } }
        var node = Concat(Bytes(1, "a"u8.ToArray()), Bytes(1, "b"u8.ToArray()), Bytes(2, "c"u8.ToArray()), Bytes(4, "MatMulInteger"u8.ToArray()));
        var node2 = Concat(Bytes(1, "x"u8.ToArray()), Bytes(2, "a"u8.ToArray()), Bytes(4, "DynamicQuantizeLinear"u8.ToArray()));
        var path = Path.Combine(_dir, "quantized.onnx");
        File.WriteAllBytes(path, Concat(Varint(1, 8), Bytes(7, Concat(Bytes(1, node2), Bytes(1, node)))));
        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(path, Path.Combine(ArchitectureFixtures.Folder("onnx-bert"), "vocab.txt"), Path.Combine(_dir, "q")));
        Assert.Equal("quantization", e.Field);
        Assert.Contains("MatMulInteger", e.Message);
        Assert.Contains("not supported", e.Message);
        Assert.Contains(path, e.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, "q")));
    }

    [Fact]
    public void ExternalDataIsReadFromItsFile()
    {
        var folder = ArchitectureFixtures.Folder("onnx-distilbert");
        var given = Path.Combine(_dir, "external");
        Directory.CreateDirectory(given);
        int moved = ExternalDataRewriter.Rewrite(Path.Combine(folder, "model.onnx"), Path.Combine(given, "model.onnx"), "model.onnx.data");
        Assert.True(moved > 10, $"only {moved} initializers were moved");
        long before = new FileInfo(Path.Combine(folder, "model.onnx")).Length, after = new FileInfo(Path.Combine(given, "model.onnx")).Length;
        long data = new FileInfo(Path.Combine(given, "model.onnx.data")).Length;
        output.WriteLine($"{moved} initializers moved: model.onnx {before} -> {after} bytes, model.onnx.data {data} bytes");
        Assert.True(data > 60_000 && after < before - 60_000, "the weights should live in the data file");
        var outDir = Path.Combine(_dir, "external-out");
        OnnxBertImporter.Import(Path.Combine(given, "model.onnx"), Path.Combine(folder, "vocab.txt"), outDir);
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("onnx-distilbert");
        using var model = ModelLoader.Load(outDir);
        Assert.True((model.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);

        File.Delete(Path.Combine(given, "model.onnx.data"));
        var e = Assert.Throws<ModelLoadException>(() => OnnxBertImporter.Import(Path.Combine(given, "model.onnx"), Path.Combine(folder, "vocab.txt"), Path.Combine(_dir, "x")));
        Assert.Contains("model.onnx.data", e.Message);
    }

    private static bool ReadLowerCase(string dir)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")));
        return doc.RootElement.GetProperty("do_lower_case").GetBoolean();
    }

    private static string TokenizerJson(bool lowercase, string dir)
    {
        var vocab = File.ReadAllLines(Path.Combine(dir, "vocab.txt")).Select((t, i) => (t, i)).ToDictionary(p => p.t, p => p.i);
        return JsonSerializer.Serialize(new
        {
            version = "1.0",
            normalizer = new { type = "BertNormalizer", clean_text = true, handle_chinese_chars = true, strip_accents = (bool?)null, lowercase },
            model = new { type = "WordPiece", unk_token = "[UNK]", continuing_subword_prefix = "##", max_input_chars_per_word = 100, vocab },
        });
    }

    internal static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];
    private static byte[] Key(int field, int wireType) => VarintBytes((ulong)(field << 3 | wireType));
    internal static byte[] Varint(int field, ulong value) => Concat(Key(field, 0), VarintBytes(value));
    internal static byte[] Bytes(int field, byte[] payload) => Concat(Key(field, 2), VarintBytes((ulong)payload.Length), payload);

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

/// <summary>
/// Rewrites an .onnx file so that every initializer with raw_data keeps it in one external file instead (what
/// onnx.save_model(..., save_as_external_data=True) writes): TensorProto.raw_data (9) is replaced by external_data (13:
/// location, offset, length) and data_location (14) = EXTERNAL. Only the fields the rewrite touches are decoded.
/// </summary>
internal static class ExternalDataRewriter
{
    public static int Rewrite(string source, string target, string dataFile)
    {
        var bytes = File.ReadAllBytes(source);
        using var data = new MemoryStream();
        int moved = 0;
        var model = Fields(bytes, 0, bytes.Length).Select(f => f.Field == 7 && f.Wire == 2
            ? OnnxClassifierImportTests.Bytes(7, RewriteGraph(bytes, f.Start, f.Length))
            : bytes[f.Raw.Start..f.Raw.End]);
        File.WriteAllBytes(target, OnnxClassifierImportTests.Concat(model.ToArray()));
        File.WriteAllBytes(Path.Combine(Path.GetDirectoryName(target)!, dataFile), data.ToArray());
        return moved;

        byte[] RewriteGraph(byte[] b, int start, int length) => OnnxClassifierImportTests.Concat(Fields(b, start, length)
            .Select(f => f.Field == 5 && f.Wire == 2 ? OnnxClassifierImportTests.Bytes(5, RewriteTensor(b, f.Start, f.Length)) : b[f.Raw.Start..f.Raw.End]).ToArray());

        byte[] RewriteTensor(byte[] b, int start, int length)
        {
            var fields = Fields(b, start, length).ToList();
            var raw = fields.FirstOrDefault(f => f.Field == 9 && f.Wire == 2);
            if (raw.Length == 0) return b[start..(start + length)];
            long offset = data.Position;
            data.Write(b, raw.Start, raw.Length);
            moved++;
            byte[] Entry(string key, string value) => OnnxClassifierImportTests.Bytes(13, OnnxClassifierImportTests.Concat(
                OnnxClassifierImportTests.Bytes(1, Encoding.UTF8.GetBytes(key)), OnnxClassifierImportTests.Bytes(2, Encoding.UTF8.GetBytes(value))));
            var kept = fields.Where(f => f.Field != 9).Select(f => b[f.Raw.Start..f.Raw.End]);
            return OnnxClassifierImportTests.Concat([.. kept, Entry("location", dataFile), Entry("offset", offset.ToString()),
                Entry("length", raw.Length.ToString()), OnnxClassifierImportTests.Varint(14, 1)]);
        }
    }

    private readonly record struct Span(int Start, int End);
    private readonly record struct FieldAt(int Field, int Wire, int Start, int Length, Span Raw);

    /// <summary>The top-level fields of a protobuf message in b[start, start + length): payload position of length-delimited ones.</summary>
    private static IEnumerable<FieldAt> Fields(byte[] b, int start, int length)
    {
        int p = start, end = start + length;
        while (p < end)
        {
            int begin = p;
            ulong key = ReadVarint(b, ref p);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            int payload = p, size;
            switch (wire)
            {
                case 0: ReadVarint(b, ref p); size = p - payload; break;
                case 1: p += 8; size = 8; break;
                case 5: p += 4; size = 4; break;
                case 2: size = (int)ReadVarint(b, ref p); payload = p; p += size; break;
                default: throw new InvalidDataException($"wire type {wire}");
            }
            yield return new FieldAt(field, wire, payload, size, new Span(begin, p));
        }
    }

    private static ulong ReadVarint(byte[] b, ref int p)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte x = b[p++];
            v |= (ulong)(x & 0x7F) << shift;
            if ((x & 0x80) == 0) return v;
        }
    }
}
