using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using AttributionFleet.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Onnx;

/// <summary>What <see cref="OnnxBertImporter.Import"/> found and wrote.</summary>
public sealed record ImportReport(int Layers, int Hidden, int Heads, int Intermediate, double LayerNormEps, int TensorCount);

/// <summary>
/// Converts a BERT-family encoder exported to ONNX by PyTorch (<c>torch.onnx.export</c> of a Hugging Face
/// <c>BertModel</c>) into a Hugging Face model folder: config.json, model.safetensors (F32), vocab.txt and
/// tokenizer_config.json.
/// <para>
/// In such exports biases, LayerNorm parameters and embeddings keep their module names (with or without a
/// <c>bert.</c> prefix), while each Linear weight becomes a numbered initializer stored [in, out] and fed to a
/// MatMul. The importer names such a weight by tracing MatMul → Add(named bias) and transposes it to the
/// Hugging Face [out, in] layout. A Gemm keeps its weight as stored when <c>transB = 1</c>. The configuration
/// is read from the graph: layer_norm_eps from the spelled-out LayerNorm (the Add constant before Sqrt),
/// the number of heads from the attention Reshape shapes and the 1/sqrt(head_dim) score scale, the
/// activation from the ops after the intermediate dense layer (Erf → exact "gelu", Tanh → "gelu_new").
/// </para>
/// </summary>
public static class OnnxBertImporter
{
    private static readonly string[] RootPrefixes = ["embeddings.", "encoder.layer.", "pooler."];
    private static readonly Regex LayerIndex = new(@"^encoder\.layer\.(\d+)\.", RegexOptions.CultureInvariant);

    public static ImportReport Import(string onnxPath, string vocabPath, string outDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(onnxPath);
        ArgumentException.ThrowIfNullOrEmpty(vocabPath);
        ArgumentException.ThrowIfNullOrEmpty(outDir);

        if (!File.Exists(onnxPath)) throw new ModelLoadException($"ONNX model '{onnxPath}' does not exist", onnxPath);
        if (!File.Exists(vocabPath)) throw new ModelLoadException($"vocabulary '{vocabPath}' does not exist", vocabPath);

        OnnxGraph graph;
        try
        {
            graph = OnnxGraph.Read(File.ReadAllBytes(onnxPath));
        }
        catch (ProtoFormatException e)
        {
            throw new ModelLoadException($"'{onnxPath}' is not a readable ONNX model: {e.Message}", onnxPath, null, e);
        }
        catch (IOException e)
        {
            throw new ModelLoadException($"cannot read ONNX model '{onnxPath}': {e.Message}", onnxPath, null, e);
        }

        BertGraph bert;
        try
        {
            bert = new BertGraph(graph, onnxPath);
        }
        catch (ProtoFormatException e)
        {
            throw new ModelLoadException($"'{onnxPath}' holds a malformed tensor: {e.Message}", onnxPath, null, e);
        }

        int vocabLines = File.ReadLines(vocabPath).Count();
        if (vocabLines > bert.VocabSize)
            throw new ModelLoadException(
                $"vocabulary '{vocabPath}' has {vocabLines} tokens but '{onnxPath}' embeds only {bert.VocabSize}",
                vocabPath, "vocab_size");

        Directory.CreateDirectory(outDir);
        int count = bert.WriteSafeTensors(Path.Combine(outDir, "model.safetensors"));
        WriteJson(Path.Combine(outDir, "config.json"), new
        {
            architectures = new[] { "BertModel" },
            model_type = "bert",
            vocab_size = bert.VocabSize,
            hidden_size = bert.Hidden,
            num_hidden_layers = bert.Layers,
            num_attention_heads = bert.Heads,
            intermediate_size = bert.Intermediate,
            hidden_act = bert.HiddenAct,
            max_position_embeddings = bert.MaxPositions,
            type_vocab_size = bert.TypeVocabSize,
            layer_norm_eps = bert.LayerNormEps,
            pad_token_id = 0,
            hidden_dropout_prob = 0.1,
            attention_probs_dropout_prob = 0.1,
            initializer_range = 0.02,
            position_embedding_type = "absolute",
            torch_dtype = "float32",
        });
        File.Copy(vocabPath, Path.Combine(outDir, "vocab.txt"), overwrite: true);
        WriteJson(Path.Combine(outDir, "tokenizer_config.json"), new
        {
            do_lower_case = true,
            model_max_length = bert.MaxPositions,
        });
        return new ImportReport(bert.Layers, bert.Hidden, bert.Heads, bert.Intermediate, bert.LayerNormEps, count);
    }

    private static void WriteJson(string path, object value) =>
        File.WriteAllText(path, JsonSerializer.Serialize(value, new JsonSerializerOptions { WriteIndented = true }) + "\n");

    /// <summary>Strips a wrapper prefix such as <c>bert.</c>; null for names outside the encoder.</summary>
    internal static string? HfName(string onnxName)
    {
        foreach (var root in RootPrefixes)
        {
            if (onnxName.StartsWith(root, StringComparison.Ordinal)) return onnxName;
            int at = onnxName.IndexOf("." + root, StringComparison.Ordinal);
            if (at >= 0) return onnxName[(at + 1)..];
        }
        return null;
    }

    /// <summary>A parameter found in the graph: the initializer and whether it is stored [in, out].</summary>
    private sealed record Parameter(OnnxTensor Tensor, bool Transpose);

    /// <summary>The analysis of one graph: parameters under their Hugging Face names and the configuration.</summary>
    private sealed class BertGraph
    {
        private readonly string _path;
        private readonly Dictionary<string, OnnxTensor> _constants = new(StringComparer.Ordinal);
        private readonly Dictionary<string, OnnxNode> _producers = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<OnnxNode>> _consumers = new(StringComparer.Ordinal);
        private readonly Dictionary<string, Parameter> _parameters = new(StringComparer.Ordinal);
        /// <summary>The value each traced Linear layer produces (its bias Add or Gemm output), by HF weight name.</summary>
        private readonly Dictionary<string, string> _linearOutputs = new(StringComparer.Ordinal);
        private readonly List<string> _order = [];

        public int VocabSize, Hidden, MaxPositions, TypeVocabSize, Layers, Intermediate, Heads;
        public double LayerNormEps;
        public string HiddenAct = "";

        public BertGraph(OnnxGraph graph, string path)
        {
            _path = path;
            Index(graph);
            CollectNamedParameters(graph);
            TraceLinearWeights(graph);
            ReadDimensions();
            CheckParameters();
            LayerNormEps = FindLayerNormEps(graph);
            Heads = FindHeads(graph);
            HiddenAct = FindActivation();
        }

        private ModelLoadException Fail(string what, string? field = null) =>
            new($"'{_path}': {what}", _path, field);

        private void Index(OnnxGraph graph)
        {
            foreach (var t in graph.Initializers) _constants[t.Name] = t;
            foreach (var node in graph.Nodes)
            {
                foreach (var output in node.Outputs)
                    if (output.Length > 0) _producers[output] = node;
                foreach (var input in node.Inputs)
                {
                    if (input.Length == 0) continue;
                    if (!_consumers.TryGetValue(input, out var list)) _consumers[input] = list = [];
                    list.Add(node);
                }
                if (node.OpType == "Constant" && node.Outputs.Count == 1 && ConstantValue(node) is { } value)
                    _constants[node.Outputs[0]] = value;
            }
        }

        /// <summary>The tensor a Constant node holds: attribute value (tensor), value_float, value_int or value_ints.</summary>
        private static OnnxTensor? ConstantValue(OnnxNode node)
        {
            string name = node.Outputs[0];
            foreach (var a in node.Attributes)
            {
                switch (a.Name)
                {
                    case "value" when a.T is { } t:
                        return new OnnxTensor
                        {
                            Name = name, Dims = t.Dims, DataType = t.DataType, Raw = t.Raw, External = t.External,
                            FloatData = t.FloatData, IntData = t.IntData, DoubleData = t.DoubleData,
                        };
                    case "value_float" when a.F is { } f:
                        return new OnnxTensor { Name = name, Dims = [], DataType = OnnxTensor.Float, FloatData = [f] };
                    case "value_int" when a.I is { } i:
                        return new OnnxTensor { Name = name, Dims = [], DataType = OnnxTensor.Int64, IntData = [i] };
                    case "value_ints":
                        return new OnnxTensor { Name = name, Dims = [a.Ints.Count], DataType = OnnxTensor.Int64, IntData = a.Ints };
                }
            }
            return null;
        }

        private void CollectNamedParameters(OnnxGraph graph)
        {
            foreach (var t in graph.Initializers)
            {
                if (HfName(t.Name) is not { } name || name.EndsWith("position_ids", StringComparison.Ordinal)) continue;
                if (t.External) throw Fail($"initializer '{t.Name}' keeps its data in an external file, which is not supported", name);
                _parameters[name] = new Parameter(t, Transpose: false);
            }
        }

        /// <summary>
        /// Names each Linear weight by the bias added to its product: MatMul(x, W) → Add(b, ·) or Gemm(x, W, b).
        /// A MatMul weight read straight from an initializer is [in, out] and gets transposed; one read through a
        /// Transpose node, or a Gemm weight with transB = 1, is already [out, in].
        /// </summary>
        private void TraceLinearWeights(OnnxGraph graph)
        {
            foreach (var node in graph.Nodes)
            {
                if (node.OpType is not ("MatMul" or "Gemm") || node.Inputs.Count < 2 || node.Outputs.Count < 1) continue;
                if (ResolveWeight(node.Inputs[1]) is not (var weight, bool viaTranspose)) continue;
                bool transpose = node.OpType == "Gemm"
                    ? (node.Attribute("transB")?.I ?? 0) == 0
                    : true;
                if (viaTranspose) transpose = !transpose;

                string? biasName = null;
                string output = node.Outputs[0];
                if (node.OpType == "Gemm" && node.Inputs.Count > 2) biasName = node.Inputs[2];
                else if (_consumers.TryGetValue(node.Outputs[0], out var users))
                {
                    foreach (var add in users.Where(u => u.OpType == "Add" && u.Inputs.Count == 2))
                    {
                        string other = add.Inputs[0] == node.Outputs[0] ? add.Inputs[1] : add.Inputs[0];
                        if (_constants.ContainsKey(other) && HfName(other) is { } b && b.EndsWith(".bias", StringComparison.Ordinal))
                        {
                            biasName = other;
                            output = add.Outputs[0];
                            break;
                        }
                    }
                }

                string? name = biasName is not null && HfName(biasName) is { } hfBias && hfBias.EndsWith(".bias", StringComparison.Ordinal)
                    ? hfBias[..^".bias".Length] + ".weight"
                    : HfName(weight.Name) is { } own && own.EndsWith(".weight", StringComparison.Ordinal) ? own : null;
                if (name is null) continue;
                if (weight.External) throw Fail($"initializer '{weight.Name}' keeps its data in an external file, which is not supported", name);
                if (weight.Dims.Count != 2) throw Fail($"the weight of '{name}' (initializer '{weight.Name}') has shape {weight.ShapeText}, expected a matrix", name);
                if (_linearOutputs.ContainsKey(name) && !ReferenceEquals(_parameters[name].Tensor, weight))
                    throw Fail($"two different initializers feed the linear layer '{name}'", name);
                _parameters[name] = new Parameter(weight, transpose);
                _linearOutputs[name] = output;
            }
        }

        private (OnnxTensor Weight, bool ViaTranspose)? ResolveWeight(string input)
        {
            if (_constants.TryGetValue(input, out var direct))
                return direct.IsFloatingPoint && direct.Dims.Count == 2 ? (direct, false) : null;
            if (_producers.TryGetValue(input, out var producer) && producer.OpType == "Transpose"
                && producer.Inputs.Count == 1 && _constants.TryGetValue(producer.Inputs[0], out var source)
                && source.IsFloatingPoint && source.Dims.Count == 2)
            {
                var perm = producer.Attribute("perm")?.Ints;
                if (perm is null || perm.Count == 0 || perm.SequenceEqual([1L, 0L])) return (source, true);
            }
            return null;
        }

        private IReadOnlyList<long> Shape(string name)
        {
            if (!_parameters.TryGetValue(name, out var p)) throw Fail($"the graph has no initializer for '{name}'", name);
            return p.Transpose ? [p.Tensor.Dims[1], p.Tensor.Dims[0]] : p.Tensor.Dims;
        }

        private int Dim(string name, int axis, int rank)
        {
            var shape = Shape(name);
            if (shape.Count != rank) throw Fail($"'{name}' has shape [{string.Join(", ", shape)}], expected rank {rank}", name);
            if (shape[axis] <= 0 || shape[axis] > int.MaxValue) throw Fail($"'{name}' has an invalid shape [{string.Join(", ", shape)}]", name);
            return (int)shape[axis];
        }

        private void ReadDimensions()
        {
            VocabSize = Dim("embeddings.word_embeddings.weight", 0, 2);
            Hidden = Dim("embeddings.word_embeddings.weight", 1, 2);
            MaxPositions = Dim("embeddings.position_embeddings.weight", 0, 2);
            TypeVocabSize = Dim("embeddings.token_type_embeddings.weight", 0, 2);
            var indices = _parameters.Keys.Select(k => LayerIndex.Match(k)).Where(m => m.Success)
                .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
            if (indices.Count == 0) throw Fail("the graph has no encoder.layer.N parameters", "num_hidden_layers");
            Layers = indices.Max() + 1;
            Intermediate = Dim("encoder.layer.0.intermediate.dense.bias", 0, 1);
        }

        /// <summary>Every parameter of a Hugging Face BertModel is present with its expected shape.</summary>
        private void CheckParameters()
        {
            long h = Hidden, i = Intermediate;
            void Expect(string name, params long[] shape)
            {
                var actual = Shape(name);
                if (!actual.SequenceEqual(shape))
                    throw Fail($"'{name}' has shape [{string.Join(", ", actual)}], expected [{string.Join(", ", shape)}]", name);
                _order.Add(name);
            }
            void Linear(string prefix, long outDim, long inDim)
            {
                Expect(prefix + ".weight", outDim, inDim);
                Expect(prefix + ".bias", outDim);
            }
            void LayerNorm(string prefix)
            {
                Expect(prefix + ".weight", h);
                Expect(prefix + ".bias", h);
            }

            Expect("embeddings.word_embeddings.weight", VocabSize, h);
            Expect("embeddings.position_embeddings.weight", MaxPositions, h);
            Expect("embeddings.token_type_embeddings.weight", TypeVocabSize, h);
            LayerNorm("embeddings.LayerNorm");
            for (int layer = 0; layer < Layers; layer++)
            {
                string p = $"encoder.layer.{layer}.";
                Linear(p + "attention.self.query", h, h);
                Linear(p + "attention.self.key", h, h);
                Linear(p + "attention.self.value", h, h);
                Linear(p + "attention.output.dense", h, h);
                LayerNorm(p + "attention.output.LayerNorm");
                Linear(p + "intermediate.dense", i, h);
                Linear(p + "output.dense", h, i);
                LayerNorm(p + "output.LayerNorm");
            }
            if (_parameters.ContainsKey("pooler.dense.weight") || _parameters.ContainsKey("pooler.dense.bias"))
                Linear("pooler.dense", h, h);
        }

        /// <summary>
        /// The epsilon of the spelled-out LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add(eps), Sqrt, Div), or the
        /// epsilon attribute of LayerNormalization nodes. All LayerNorms of a BERT share one value.
        /// </summary>
        private double FindLayerNormEps(OnnxGraph graph)
        {
            var found = new List<double>();
            foreach (var node in graph.Nodes)
            {
                if (node.OpType == "LayerNormalization")
                {
                    found.Add(RoundFloat(node.Attribute("epsilon")?.F ?? 1e-5f));
                    continue;
                }
                if (node.OpType != "Sqrt" || node.Inputs.Count != 1) continue;
                if (!_producers.TryGetValue(node.Inputs[0], out var add) || add.OpType != "Add" || add.Inputs.Count != 2) continue;
                for (int k = 0; k < 2; k++)
                {
                    if (_constants.TryGetValue(add.Inputs[k], out var eps) && eps.ElementCount == 1
                        && _producers.TryGetValue(add.Inputs[1 - k], out var mean) && mean.OpType == "ReduceMean")
                    {
                        found.Add(eps.DataType == OnnxTensor.Double ? eps.ToDoubles()[0] : RoundFloat(eps.ToFloats()[0]));
                    }
                }
            }
            if (found.Count == 0)
                throw Fail("no LayerNorm epsilon found (neither Add(ReduceMean(...), eps) → Sqrt nor LayerNormalization)", "layer_norm_eps");
            if (found.Distinct().Count() > 1)
                throw Fail($"the LayerNorms use different epsilons ({string.Join(", ", found.Distinct())})", "layer_norm_eps");
            return found[0];
        }

        /// <summary>A float32 constant as the double it was written as: 9.99999996e-13f → 1e-12.</summary>
        private static double RoundFloat(float value) =>
            double.Parse(value.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

        /// <summary>
        /// The number of heads, from the Reshape to [batch, seq, heads, head_dim] (its shape a constant or a Concat
        /// of constants) and from the score scale (MatMul(q, kᵀ) divided by sqrt(head_dim) or multiplied by its
        /// inverse). Where both are found they must agree.
        /// </summary>
        private int FindHeads(OnnxGraph graph)
        {
            int? fromReshape = null, fromScale = null;
            foreach (var node in graph.Nodes)
            {
                if (fromReshape is null && node.OpType == "Reshape" && node.Inputs.Count == 2
                    && ShapeValues(node.Inputs[1]) is { Length: 4 } shape
                    && shape[2] > 1 && shape[3] > 1 && shape[2] * shape[3] == Hidden)
                    fromReshape = (int)shape[2];

                if (fromScale is null && node.OpType is "Div" or "Mul" && node.Inputs.Count == 2
                    && _producers.TryGetValue(node.Inputs[0], out var matmul) && matmul.OpType == "MatMul"
                    && matmul.Inputs.All(x => !_constants.ContainsKey(x))
                    && _constants.TryGetValue(node.Inputs[1], out var scale) && scale.ElementCount == 1 && scale.IsFloatingPoint)
                {
                    double c = scale.ToDoubles()[0];
                    double headDim = node.OpType == "Div" ? c * c : 1 / (c * c);
                    long rounded = (long)Math.Round(headDim);
                    if (rounded > 0 && Math.Abs(headDim - rounded) < 1e-3 * rounded && Hidden % rounded == 0)
                        fromScale = (int)(Hidden / rounded);
                }
            }
            if (fromReshape is { } a && fromScale is { } b && a != b)
                throw Fail($"the attention Reshape gives {a} heads but the score scale gives {b}", "num_attention_heads");
            return fromReshape ?? fromScale
                ?? throw Fail("no attention head count found (no Reshape to [.., .., heads, head_dim] and no 1/sqrt(head_dim) score scale)", "num_attention_heads");
        }

        /// <summary>The values of a Reshape shape input; -1 where an element is computed at run time.</summary>
        private long[]? ShapeValues(string input)
        {
            if (_constants.TryGetValue(input, out var constant))
                return constant.DataType is OnnxTensor.Int64 or OnnxTensor.Int32 ? constant.ToInt64s() : null;
            if (!_producers.TryGetValue(input, out var concat) || concat.OpType != "Concat") return null;
            var values = new List<long>();
            foreach (var part in concat.Inputs)
            {
                if (_constants.TryGetValue(part, out var c) && c.DataType is OnnxTensor.Int64 or OnnxTensor.Int32)
                    values.AddRange(c.ToInt64s());
                else values.Add(-1); // an Unsqueeze of a Gather of Shape: one element
            }
            return [.. values];
        }

        /// <summary>
        /// The activation between each intermediate dense layer and the next MatMul: Erf → exact "gelu",
        /// Tanh → "gelu_new" (the tanh approximation), Relu → "relu".
        /// </summary>
        private string FindActivation()
        {
            string? act = null;
            for (int layer = 0; layer < Layers; layer++)
            {
                string key = $"encoder.layer.{layer}.intermediate.dense.weight";
                if (!_linearOutputs.TryGetValue(key, out var start))
                    throw Fail($"cannot trace the output of '{key}' to find the activation", "hidden_act");
                var ops = new HashSet<string>(StringComparer.Ordinal);
                var queue = new Queue<string>([start]);
                var seen = new HashSet<string>(StringComparer.Ordinal);
                while (queue.Count > 0 && seen.Count < 32)
                {
                    if (!_consumers.TryGetValue(queue.Dequeue(), out var users)) continue;
                    foreach (var user in users)
                    {
                        if (user.OpType is "MatMul" or "Gemm" || !seen.Add(user.Name + "|" + string.Join(",", user.Outputs))) continue;
                        ops.Add(user.OpType);
                        foreach (var o in user.Outputs) queue.Enqueue(o);
                    }
                }
                string found = ops.Contains("Erf") ? "gelu"
                    : ops.Contains("Tanh") ? "gelu_new"
                    : ops.Contains("Relu") ? "relu"
                    : throw Fail($"unrecognised activation after '{key}' (ops: {string.Join(", ", ops.Order())})", "hidden_act");
                if (act is not null && act != found) throw Fail($"layers use different activations ({act}, {found})", "hidden_act");
                act = found;
            }
            return act ?? throw Fail("no encoder layers", "hidden_act");
        }

        /// <summary>Writes the parameters in Hugging Face order; returns the number of tensors.</summary>
        public int WriteSafeTensors(string path)
        {
            using var scope = NewDisposeScope();
            var tensors = new List<KeyValuePair<string, Tensor>>(_order.Count);
            foreach (var name in _order)
            {
                Tensor t;
                try
                {
                    var p = _parameters[name];
                    t = torch.tensor(p.Tensor.ToFloats(), p.Tensor.Dims.ToArray());
                    if (p.Transpose) t = t.t().contiguous();
                }
                catch (ProtoFormatException e)
                {
                    throw new ModelLoadException($"'{_path}': cannot read '{name}': {e.Message}", _path, name, e);
                }
                tensors.Add(new(name, t));
            }
            SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            return tensors.Count;
        }
    }
}
