using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using AttributionFleet.Engine.Architectures;
using AttributionFleet.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Onnx;

/// <summary>What <see cref="OnnxBertImporter.Import"/> found and wrote.</summary>
public sealed record ImportReport(int Layers, int Hidden, int Heads, int Intermediate, double LayerNormEps, int TensorCount)
{
    /// <summary>The Hugging Face architecture written to config.json (the head the export kept).</summary>
    public string Architecture { get; init; } = "BertModel";
    public int Labels { get; init; }
    /// <summary>Whether the tokenizer lower-cases, and which file said so (or that the vocabulary's own tokens did).</summary>
    public bool LowerCase { get; init; } = true;
    public string CasingSource { get; init; } = "";
}

/// <summary>
/// Converts a BERT-family model exported to ONNX by PyTorch (<c>torch.onnx.export</c> of a Hugging Face
/// <c>BertModel</c>, <c>BertForSequenceClassification</c>, <c>DistilBertForSequenceClassification</c>,
/// <c>RobertaForSequenceClassification</c> or <c>XLMRobertaForSequenceClassification</c>) into a Hugging Face model
/// folder: config.json (the family's own field names), model.safetensors (F32), the tokenizer files and
/// tokenizer_config.json. A classifier export keeps its head (pooler + classifier, pre_classifier + classifier,
/// classifier.dense + out_proj); the family's <see cref="Architectures.WeightTable"/> says which parameters it must have.
/// <para>
/// In such exports biases, LayerNorm parameters and embeddings keep their module names (with or without a
/// <c>bert.</c>/<c>roberta.</c>/<c>distilbert.</c> prefix), while each Linear weight on a 3-D input becomes a numbered
/// initializer stored [in, out] and fed to a MatMul. The importer names such a weight by tracing MatMul → Add(named
/// bias) and transposes it to the Hugging Face [out, in] layout. A Gemm keeps its weight as stored when
/// <c>transB = 1</c>. Parameters the exporter found equal are written once and aliased by Identity nodes; those are
/// followed. Initializers with external data are read from their file beside the .onnx. The configuration is read from
/// the graph: layer_norm_eps from the spelled-out LayerNorm (the Add constant before Sqrt) or LayerNormalization's
/// epsilon, the number of heads from the attention Reshape shapes and the 1/sqrt(head_dim) score scale, the
/// activation from the ops after the intermediate dense layer (Erf → exact "gelu", Tanh → "gelu_new"). int8-quantized
/// exports (DynamicQuantizeLinear, MatMulInteger, …) are refused.
/// </para>
/// </summary>
public static class OnnxBertImporter
{
    private static readonly string[] RootPrefixes = ["embeddings.", "encoder.layer.", "transformer.layer.", "pooler."];
    private static readonly string[] HeadPrefixes = ["classifier.", "pre_classifier."];
    private static readonly Regex LayerIndex = new(@"^(?:encoder|transformer)\.layer\.(\d+)\.", RegexOptions.CultureInvariant);
    private static readonly HashSet<string> QuantizedOps = new(StringComparer.Ordinal)
    {
        "DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearAdd", "ConvInteger",
        "DynamicQuantizeMatMul", "QAttention", "QEmbedLayerNormalization",
    };

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

        var vocabulary = ImportVocabulary.Read(vocabPath);
        BertGraph bert;
        try
        {
            bert = new BertGraph(graph, onnxPath, vocabulary);
        }
        catch (ProtoFormatException e)
        {
            throw new ModelLoadException($"'{onnxPath}' holds a malformed tensor: {e.Message}", onnxPath, null, e);
        }

        if (vocabulary.Size > bert.Config.VocabSize)
            throw new ModelLoadException(
                $"vocabulary '{vocabPath}' has {vocabulary.Size} tokens but '{onnxPath}' embeds only {bert.Config.VocabSize}",
                vocabPath, "vocab_size");

        Directory.CreateDirectory(outDir);
        int count = bert.WriteSafeTensors(Path.Combine(outDir, "model.safetensors"));
        WriteJson(Path.Combine(outDir, "config.json"), ConfigJson(bert.Config));
        vocabulary.CopyTo(outDir, bert.Config.MaxSequenceLength);
        var c = bert.Config;
        return new ImportReport(c.Layers, c.HiddenSize, c.Heads, c.IntermediateSize, c.LayerNormEps, count)
        {
            Architecture = c.Architecture, Labels = c.Labels.Count, LowerCase = vocabulary.LowerCase, CasingSource = vocabulary.CasingSource,
        };
    }

    /// <summary>config.json in the family's own field names (DistilBERT's dim/n_layers/…; BERT's elsewhere).</summary>
    private static Dictionary<string, object> ConfigJson(ModelConfig c)
    {
        var json = new Dictionary<string, object> { ["architectures"] = new[] { c.Architecture }, ["model_type"] = c.ModelType, ["vocab_size"] = c.VocabSize };
        if (c.Family == ModelFamily.DistilBert)
        {
            json["dim"] = c.HiddenSize;
            json["n_layers"] = c.Layers;
            json["n_heads"] = c.Heads;
            json["hidden_dim"] = c.IntermediateSize;
            json["activation"] = c.HiddenAct;
        }
        else
        {
            json["hidden_size"] = c.HiddenSize;
            json["num_hidden_layers"] = c.Layers;
            json["num_attention_heads"] = c.Heads;
            json["intermediate_size"] = c.IntermediateSize;
            json["hidden_act"] = c.HiddenAct;
            json["type_vocab_size"] = c.TypeVocabSize;
            json["layer_norm_eps"] = c.LayerNormEps;
            json["position_embedding_type"] = "absolute";
        }
        json["max_position_embeddings"] = c.MaxPositions;
        json["pad_token_id"] = c.PadTokenId;
        if (c.Labels.Count > 0)
        {
            json["id2label"] = c.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.i.ToString(CultureInfo.InvariantCulture), p => p.l);
            json["label2id"] = c.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => p.i);
        }
        json["torch_dtype"] = "float32";
        return json;
    }

    private static void WriteJson(string path, object value) =>
        File.WriteAllText(path, JsonSerializer.Serialize(value, new JsonSerializerOptions { WriteIndented = true }) + "\n");

    /// <summary>Strips a wrapper prefix such as <c>bert.</c>; null for names outside the encoder.</summary>
    internal static string? HfName(string onnxName)
    {
        foreach (var head in HeadPrefixes)
            if (onnxName.StartsWith(head, StringComparison.Ordinal)) return onnxName;
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

        private readonly string _modelDir;
        private readonly ImportVocabulary _vocabulary;
        private ModelFamily _family;
        private IArchitecture _architecture = null!;
        private WeightTable _table = null!;

        public ModelConfig Config { get; private set; } = null!;

        public BertGraph(OnnxGraph graph, string path, ImportVocabulary vocabulary)
        {
            _path = path;
            _modelDir = Path.GetDirectoryName(Path.GetFullPath(path))!;
            _vocabulary = vocabulary;
            RefuseQuantized(graph);
            Index(graph);
            CollectNamedParameters();
            TraceLinearWeights(graph);
            ReadConfig(graph);
        }

        private ModelLoadException Fail(string what, string? field = null) =>
            new($"'{_path}': {what}", _path, field);

        /// <summary>
        /// int8 exports (onnxruntime's quantize_dynamic: DynamicQuantizeLinear + MatMulInteger) are refused: their
        /// weights are int8 with scales and zero points, and DeepLift must explain the model that runs. Dequantizing
        /// would explain a different (float) model than the quantized one a user deploys.
        /// </summary>
        private void RefuseQuantized(OnnxGraph graph)
        {
            var ops = graph.Nodes.Select(n => n.OpType).Where(QuantizedOps.Contains).Distinct().Order().ToList();
            if (ops.Count > 0)
                throw Fail($"this is an int8-quantized export ({string.Join(", ", ops)}); quantized exports are not supported: the " +
                    "explanation must be of the model that runs, and dequantized weights are a different model. Import the float32 export " +
                    "(torch.onnx.export before quantization) instead", "quantization");
        }

        private void Index(OnnxGraph graph)
        {
            foreach (var t in graph.Initializers) _constants[t.Name] = t.External ? t.WithExternalData(_modelDir) : t;
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
            // torch.onnx.export writes parameters of equal value once and aliases the others with Identity nodes
            // (encoder.layer.1.output.LayerNorm.bias = Identity(encoder.layer.0.output.LayerNorm.bias)): follow them,
            // in graph order so that chains resolve.
            foreach (var node in graph.Nodes)
                if (node.OpType == "Identity" && node.Inputs.Count == 1 && node.Outputs.Count == 1
                    && _constants.TryGetValue(node.Inputs[0], out var source) && !_constants.ContainsKey(node.Outputs[0]))
                    _constants[node.Outputs[0]] = Renamed(source, node.Outputs[0]);
        }

        private static OnnxTensor Renamed(OnnxTensor t, string name) => new()
        {
            Name = name, Dims = t.Dims, DataType = t.DataType, Raw = t.Raw, External = t.External, ExternalData = t.ExternalData,
            FloatData = t.FloatData, IntData = t.IntData, DoubleData = t.DoubleData,
        };

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

        private void CollectNamedParameters()
        {
            foreach (var t in _constants.Values)
            {
                if (!t.IsFloatingPoint || HfName(t.Name) is not { } name || name.EndsWith("position_ids", StringComparison.Ordinal)) continue;
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

        /// <summary>
        /// The family from the parameter names (DistilBERT's transformer.layer.N, RoBERTa's roberta. prefix or
        /// classifier.out_proj head; BERT otherwise), the head from the head parameters present, the dimensions from
        /// the shapes, then every parameter of the family's weight table checked by name and shape.
        /// </summary>
        private void ReadConfig(OnnxGraph graph)
        {
            bool distil = _parameters.Keys.Any(k => k.StartsWith("transformer.layer.", StringComparison.Ordinal));
            bool robertaNames = _constants.Keys.Any(k => k.StartsWith("roberta.", StringComparison.Ordinal));
            bool robertaHead = _parameters.ContainsKey("classifier.out_proj.weight") || _parameters.ContainsKey("classifier.dense.weight");
            _family = distil ? ModelFamily.DistilBert
                : robertaNames || robertaHead ? (_vocabulary.Kind == "sentencepiece" ? ModelFamily.XlmRoberta : ModelFamily.Roberta)
                : ModelFamily.Bert;
            bool roberta = _family == ModelFamily.Roberta || _family == ModelFamily.XlmRoberta;
            string architecture =
                distil ? (_parameters.ContainsKey("pre_classifier.weight") && _parameters.ContainsKey("classifier.weight")
                    ? "DistilBertForSequenceClassification"
                    : throw Fail("a DistilBERT export without its classification head (pre_classifier + classifier) is not supported", "architectures"))
                : roberta ? (_parameters.ContainsKey("classifier.dense.weight") && _parameters.ContainsKey("classifier.out_proj.weight")
                    ? (_family == ModelFamily.XlmRoberta ? "XLMRobertaForSequenceClassification" : "RobertaForSequenceClassification")
                    : throw Fail("a RoBERTa export without its classification head (classifier.dense + classifier.out_proj) is not supported", "architectures"))
                : (_parameters.ContainsKey("classifier.weight")
                    ? (_parameters.ContainsKey("pooler.dense.weight") ? "BertForSequenceClassification"
                        : throw Fail("the export has 'classifier.weight' but no 'pooler.dense.weight': not a BertForSequenceClassification, and the head cannot be decided", "architectures"))
                    : "BertModel");
            _architecture = ArchitectureRegistry.ForName(architecture);

            int vocab = Dim("embeddings.word_embeddings.weight", 0, 2), hidden = Dim("embeddings.word_embeddings.weight", 1, 2);
            int positions = Dim("embeddings.position_embeddings.weight", 0, 2);
            var indices = _parameters.Keys.Select(k => LayerIndex.Match(k)).Where(m => m.Success)
                .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
            if (indices.Count == 0) throw Fail("the graph has no encoder.layer.N parameters", "num_hidden_layers");
            int labels = architecture == "BertModel" ? 0 : Dim(architecture.StartsWith("Distil") || architecture.StartsWith("Bert") ? "classifier.bias" : "classifier.out_proj.bias", 0, 1);
            var config = new ModelConfig
            {
                Family = _family,
                Positions = roberta ? PositionScheme.AfterPadding : PositionScheme.Absolute,
                ModelType = _architecture.ModelTypes[0],
                Architecture = architecture,
                Head = architecture switch
                {
                    "BertForSequenceClassification" => HeadKind.BertPooler,
                    "DistilBertForSequenceClassification" => HeadKind.DistilBertPreClassifier,
                    "BertModel" => HeadKind.MeanPooling,
                    _ => HeadKind.RobertaClassificationHead,
                },
                VocabSize = vocab,
                HiddenSize = hidden,
                Layers = indices.Max() + 1,
                Heads = 1,
                IntermediateSize = Dim(distil ? "transformer.layer.0.ffn.lin1.bias" : "encoder.layer.0.intermediate.dense.bias", 0, 1),
                HiddenAct = "gelu",
                LayerNormEps = 1e-12,
                MaxPositions = positions,
                TypeVocabSize = distil ? 0 : Dim("embeddings.token_type_embeddings.weight", 0, 2),
                PadTokenId = _vocabulary.PadId ?? (roberta ? 1 : 0),
                Labels = Enumerable.Range(0, labels).Select(i => $"LABEL_{i}").ToList(),
                Problem = architecture == "BertModel" ? ProblemType.Embedding : labels == 1 ? ProblemType.Regression : ProblemType.SingleLabel,
            };
            _table = _architecture.Weights(config, withClassifier: false);
            foreach (var role in _table.Roles)
            {
                var name = _table.KeyOf(role, "");
                var actual = Shape(name);
                if (!actual.SequenceEqual(role.Shape))
                    throw Fail($"'{name}' has shape [{string.Join(", ", actual)}], expected [{string.Join(", ", role.Shape)}]", name);
            }
            Config = config;
            double eps = FindLayerNormEps(graph);
            Config = config with
            {
                // DistilBERT's LayerNorm epsilon is fixed at 1e-12 in Hugging Face's code (not a config field).
                LayerNormEps = _family == ModelFamily.DistilBert ? 1e-12 : eps,
                Heads = FindHeads(graph),
                HiddenAct = FindActivation(),
            };
        }

        private int Hidden => Config.HiddenSize;

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
            for (int layer = 0; layer < Config.Layers; layer++)
            {
                string key = _table.KeyOf(_table[$"L{layer}.ff1"], "");
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

        /// <summary>
        /// Writes the parameters in the family's order under its checkpoint names (the body prefix on classifiers; a
        /// bare BertModel unprefixed, with its pooler when the export has one); returns the number of tensors.
        /// </summary>
        public int WriteSafeTensors(string path)
        {
            using var scope = NewDisposeScope();
            string prefix = Config.Head == HeadKind.MeanPooling ? "" : _table.BodyPrefix;
            var names = _table.Roles.Select(r => (Source: _table.KeyOf(r, ""), Target: _table.KeyOf(r, prefix))).ToList();
            if (Config.Head == HeadKind.MeanPooling && _parameters.ContainsKey("pooler.dense.weight") && _parameters.ContainsKey("pooler.dense.bias"))
                names.AddRange(new[] { ("pooler.dense.weight", "pooler.dense.weight"), ("pooler.dense.bias", "pooler.dense.bias") });
            var tensors = new List<KeyValuePair<string, Tensor>>(names.Count);
            foreach (var (source, target) in names)
            {
                Tensor t;
                try
                {
                    var p = _parameters[source];
                    t = torch.tensor(p.Tensor.ToFloats(), p.Tensor.Dims.ToArray());
                    if (p.Transpose) t = t.t().contiguous();
                }
                catch (ProtoFormatException e)
                {
                    throw new ModelLoadException($"'{_path}': cannot read '{source}': {e.Message}", _path, source, e);
                }
                tensors.Add(new(target, t));
            }
            SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            return tensors.Count;
        }
    }
}
