using System.Text.Json;
using AttributionFleet.Engine.Onnx;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Engine.Tests.Onnx;

public class OnnxBertImporterTests(ITestOutputHelper output)
{
    private const int Layers = 6, Hidden = 384, Heads = 12, Intermediate = 1536, Vocab = 30522, Positions = 512;

    [Fact]
    public void ImportMiniLm_ReportsAndWritesBertConfig()
    {
        var report = MiniLmModel.ImportReport;
        output.WriteLine($"import took {MiniLmModel.ImportElapsed.TotalMilliseconds:F0} ms: {report}");
        Assert.Equal((Layers, Hidden, Heads, Intermediate, 1e-12, 5 + 16 * Layers + 2),
            (report.Layers, report.Hidden, report.Heads, report.Intermediate, report.LayerNormEps, report.TensorCount));
        Assert.Equal("BertModel", report.Architecture);
        Assert.True(report.LowerCase, report.CasingSource); // the MiniLM vocabulary has no upper-case tokens

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(MiniLmModel.ImportedDir, "config.json")));
        var root = config.RootElement;
        Assert.Equal("bert", root.GetProperty("model_type").GetString());
        Assert.Equal(["BertModel"], root.GetProperty("architectures").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(Vocab, root.GetProperty("vocab_size").GetInt32());
        Assert.Equal(Hidden, root.GetProperty("hidden_size").GetInt32());
        Assert.Equal(Layers, root.GetProperty("num_hidden_layers").GetInt32());
        Assert.Equal(Heads, root.GetProperty("num_attention_heads").GetInt32());
        Assert.Equal(Intermediate, root.GetProperty("intermediate_size").GetInt32());
        Assert.Equal("gelu", root.GetProperty("hidden_act").GetString());
        Assert.Equal(Positions, root.GetProperty("max_position_embeddings").GetInt32());
        Assert.Equal(2, root.GetProperty("type_vocab_size").GetInt32());
        Assert.Equal(1e-12, root.GetProperty("layer_norm_eps").GetDouble());
        Assert.Equal(0, root.GetProperty("pad_token_id").GetInt32());

        using var tokenizer = JsonDocument.Parse(File.ReadAllText(Path.Combine(MiniLmModel.ImportedDir, "tokenizer_config.json")));
        Assert.True(tokenizer.RootElement.GetProperty("do_lower_case").GetBoolean());
        Assert.Equal(Positions, tokenizer.RootElement.GetProperty("model_max_length").GetInt32());

        Assert.Equal(File.ReadAllBytes(MiniLmModel.VocabPath), File.ReadAllBytes(Path.Combine(MiniLmModel.ImportedDir, "vocab.txt")));
    }

    [Fact]
    public void ImportMiniLm_SafeTensorsHoldEveryBertKeyWithItsShape()
    {
        var st = new SafeTensorsTestReader(Path.Combine(MiniLmModel.ImportedDir, "model.safetensors"));
        var expected = new Dictionary<string, long[]>
        {
            ["embeddings.word_embeddings.weight"] = [Vocab, Hidden],
            ["embeddings.position_embeddings.weight"] = [Positions, Hidden],
            ["embeddings.token_type_embeddings.weight"] = [2, Hidden],
            ["embeddings.LayerNorm.weight"] = [Hidden],
            ["embeddings.LayerNorm.bias"] = [Hidden],
            ["pooler.dense.weight"] = [Hidden, Hidden],
            ["pooler.dense.bias"] = [Hidden],
        };
        for (int l = 0; l < Layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            foreach (var linear in new[] { "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense" })
            {
                expected[p + linear + ".weight"] = [Hidden, Hidden];
                expected[p + linear + ".bias"] = [Hidden];
            }
            expected[p + "intermediate.dense.weight"] = [Intermediate, Hidden];
            expected[p + "intermediate.dense.bias"] = [Intermediate];
            expected[p + "output.dense.weight"] = [Hidden, Intermediate];
            expected[p + "output.dense.bias"] = [Hidden];
            foreach (var norm in new[] { "attention.output.LayerNorm", "output.LayerNorm" })
            {
                expected[p + norm + ".weight"] = [Hidden];
                expected[p + norm + ".bias"] = [Hidden];
            }
        }

        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), st.Entries.Keys.Order(StringComparer.Ordinal));
        long total = 0;
        foreach (var (name, shape) in expected)
        {
            var entry = st.Entries[name];
            Assert.True(entry.DType == "F32", $"{name} is {entry.DType}");
            Assert.True(shape.SequenceEqual(entry.Shape), $"{name} is [{string.Join(", ", entry.Shape)}], expected [{string.Join(", ", shape)}]");
            Assert.Equal(4 * shape.Aggregate(1L, (a, b) => a * b), entry.End - entry.Begin);
            total += entry.End - entry.Begin;
        }
        Assert.Equal(total, st.DataLength);
        Assert.Equal("pt", st.Metadata["format"]);
    }

    [Fact]
    public void ImportMiniLm_TransposesTracedMatMulWeightsAndKeepsGemmWeights()
    {
        var graph = OnnxGraph.Read(File.ReadAllBytes(MiniLmModel.OnnxPath));
        var initializers = graph.Initializers.ToDictionary(t => t.Name);
        var producers = graph.Nodes.SelectMany(n => n.Outputs.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var st = new SafeTensorsTestReader(Path.Combine(MiniLmModel.ImportedDir, "model.safetensors"));

        // layer 0 query: Add(query.bias, MatMul(x, W)) with W an unnamed initializer stored [in, out].
        var add = graph.Nodes.Single(n => n.OpType == "Add" && n.Inputs.Contains("encoder.layer.0.attention.self.query.bias"));
        var matmul = add.Inputs.Where(i => producers.ContainsKey(i)).Select(i => producers[i]).Single(n => n.OpType == "MatMul");
        var onnxWeight = initializers[matmul.Inputs[1]];
        Assert.Equal([Hidden, Hidden], onnxWeight.Dims);
        output.WriteLine($"layer 0 query weight is initializer '{onnxWeight.Name}'");
        AssertTransposed(onnxWeight.ToFloats(), st.ReadF32("encoder.layer.0.attention.self.query.weight"), Hidden, Hidden);

        // layer 3 intermediate: not square, [384, 1536] in the graph, [1536, 384] in Hugging Face.
        add = graph.Nodes.Single(n => n.OpType == "Add" && n.Inputs.Contains("encoder.layer.3.intermediate.dense.bias"));
        matmul = add.Inputs.Where(i => producers.ContainsKey(i)).Select(i => producers[i]).Single(n => n.OpType == "MatMul");
        onnxWeight = initializers[matmul.Inputs[1]];
        Assert.Equal([Hidden, Intermediate], onnxWeight.Dims);
        AssertTransposed(onnxWeight.ToFloats(), st.ReadF32("encoder.layer.3.intermediate.dense.weight"), Hidden, Intermediate);

        // the pooler is a Gemm with transB = 1: its named weight is already [out, in].
        Assert.Equal(initializers["pooler.dense.weight"].ToFloats(), st.ReadF32("pooler.dense.weight"));
        Assert.Equal(initializers["embeddings.word_embeddings.weight"].ToFloats(), st.ReadF32("embeddings.word_embeddings.weight"));
    }

    private static void AssertTransposed(float[] onnxInOut, float[] hfOutIn, int inDim, int outDim)
    {
        Assert.Equal(onnxInOut.Length, hfOutIn.Length);
        var random = new Random(7);
        for (int k = 0; k < 200; k++)
        {
            int i = random.Next(inDim), o = random.Next(outDim);
            Assert.Equal(onnxInOut[i * outDim + o], hfOutIn[o * inDim + i]);
        }
        // and every element, since it is cheap
        for (int i = 0; i < inDim; i++)
            for (int o = 0; o < outDim; o++)
                if (onnxInOut[i * outDim + o] != hfOutIn[o * inDim + i])
                    Assert.Fail($"weight[{o}, {i}] = {hfOutIn[o * inDim + i]} but onnx[{i}, {o}] = {onnxInOut[i * outDim + o]}");
    }

    [Theory]
    [InlineData("encoder.layer.0.attention.self.query.bias", "encoder.layer.0.attention.self.query.bias")]
    [InlineData("bert.encoder.layer.11.output.LayerNorm.weight", "encoder.layer.11.output.LayerNorm.weight")]
    [InlineData("bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight")]
    [InlineData("bert.pooler.dense.bias", "pooler.dense.bias")]
    [InlineData("onnx::MatMul_1234", null)]
    [InlineData("classifier.weight", "classifier.weight")]
    [InlineData("classifier.out_proj.bias", "classifier.out_proj.bias")]
    [InlineData("distilbert.transformer.layer.1.ffn.lin1.bias", "transformer.layer.1.ffn.lin1.bias")]
    [InlineData("roberta.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight")]
    public void HfName_StripsWrapperPrefixesAndKeepsHeads(string onnxName, string? hfName) =>
        Assert.Equal(hfName, OnnxBertImporter.HfName(onnxName));
}
