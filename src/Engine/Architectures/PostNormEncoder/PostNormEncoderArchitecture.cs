using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.PostNormEncoder;

/// <summary>
/// What the post-LayerNorm BERT-style bodies (BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA) share: embeddings
/// <c>LayerNorm(word + position [+ token_type])</c> (ELECTRA: then a projection), layers of self-attention and a
/// two-matrix MLP each followed by a residual LayerNorm, a head on token 0 or on the masked mean. A family says its key
/// names, config field names and head; <see cref="TransformerClassifier"/> runs them all.
/// Roles: word, position, type, norm.w, norm.b, proj, proj.b, L{i}.{q,q.b,k,k.b,v,v.b,o,o.b,ln1.w,ln1.b,ff1,ff1.b,ff2,ff2.b,ln2.w,ln2.b},
/// dense, dense.b, cls, cls.b.
/// </summary>
public abstract class PostNormEncoderArchitecture : IArchitecture
{
    public abstract IReadOnlyList<string> Names { get; }
    public abstract IReadOnlyList<string> ModelTypes { get; }
    public abstract string TokenizerKind { get; }
    protected abstract ModelFamily Family { get; }
    protected abstract string BodyPrefix { get; }
    protected abstract HeadKind HeadFor(string architecture);
    public abstract string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath);

    /// <summary><see cref="TransformerClassifier.Encode(Ops.TensorOps, Ops.Act, Tensor, Tensor?)"/> packs its layers when the ops can.</summary>
    public bool PacksTokens => true;

    /// <summary>The pad id when config.json has none (RoBERTa's is 1).</summary>
    protected virtual int DefaultPadTokenId => 0;
    protected virtual double DefaultLayerNormEps => 1e-12;

    /// <summary>Layer key names by part (BERT's; DistilBERT has its own).</summary>
    protected virtual string LayerPrefix(int i) => $"encoder.layer.{i}.";
    protected virtual IReadOnlyDictionary<string, string> LayerKeys { get; } = new Dictionary<string, string>
    {
        ["q"] = "attention.self.query.weight", ["q.b"] = "attention.self.query.bias",
        ["k"] = "attention.self.key.weight", ["k.b"] = "attention.self.key.bias",
        ["v"] = "attention.self.value.weight", ["v.b"] = "attention.self.value.bias",
        ["o"] = "attention.output.dense.weight", ["o.b"] = "attention.output.dense.bias",
        ["ln1.w"] = "attention.output.LayerNorm.weight", ["ln1.b"] = "attention.output.LayerNorm.bias",
        ["ff1"] = "intermediate.dense.weight", ["ff1.b"] = "intermediate.dense.bias",
        ["ff2"] = "output.dense.weight", ["ff2.b"] = "output.dense.bias",
        ["ln2.w"] = "output.LayerNorm.weight", ["ln2.b"] = "output.LayerNorm.bias",
    };

    protected virtual bool HasTokenTypes => true;
    protected virtual PositionScheme Positions => PositionScheme.Absolute;

    public virtual ModelConfig ParseConfig(JsonElement root, string architecture, string path)
    {
        int hidden = ConfigFields.Int(root, "hidden_size", path);
        int heads = ConfigFields.Int(root, "num_attention_heads", path);
        var labels = ConfigFields.Labels(root, path);
        var head = HeadFor(architecture);
        var positionType = ConfigFields.Str(root, "position_embedding_type", path);
        if (positionType is not null and not "absolute")
            throw new ModelLoadException(
                $"{path}: position_embedding_type '{positionType}' is not supported (only 'absolute'); this model's attention would be computed wrongly", path, "position_embedding_type");
        var config = new ModelConfig
        {
            Family = Family,
            Positions = Positions,
            ModelType = ConfigFields.Str(root, "model_type", path) ?? ModelTypes[0],
            Architecture = architecture,
            Head = head,
            VocabSize = ConfigFields.Int(root, "vocab_size", path),
            HiddenSize = hidden,
            EmbeddingSize = ConfigFields.IntOr(root, "embedding_size", path, hidden),
            Layers = ConfigFields.Int(root, "num_hidden_layers", path),
            Heads = heads,
            IntermediateSize = ConfigFields.Int(root, "intermediate_size", path),
            HiddenAct = ConfigFields.Activation(root, "hidden_act", path, "gelu"),
            LayerNormEps = ConfigFields.Double(root, "layer_norm_eps", path, DefaultLayerNormEps),
            MaxPositions = ConfigFields.Int(root, "max_position_embeddings", path),
            TypeVocabSize = HasTokenTypes ? ConfigFields.IntOr(root, "type_vocab_size", path, 2) : 0,
            PadTokenId = ConfigFields.TokenId(root, "pad_token_id", path, DefaultPadTokenId),
            Labels = labels,
            Problem = head == HeadKind.MeanPooling && labels.Count == 0 ? ProblemType.Embedding : ConfigFields.Problem(root, path, labels.Count),
        };
        return Check(config, path);
    }

    /// <summary>Refuses configurations the forward would compute wrongly or crash on, naming the field.</summary>
    protected ModelConfig Check(ModelConfig c, string path)
    {
        if (c.HiddenSize % c.Heads != 0)
            throw new ModelLoadException($"{path}: hidden size {c.HiddenSize} is not a multiple of the {c.Heads} attention heads", path, "num_attention_heads");
        if (c.Positions == PositionScheme.AfterPadding && c.PadTokenId + 2 > c.MaxPositions)
            throw new ModelLoadException(
                $"{path}: pad_token_id {c.PadTokenId} leaves no position: RoBERTa-style positions start at pad_token_id + 1, so max_position_embeddings ({c.MaxPositions}) must be at least pad_token_id + 2; fix 'pad_token_id' or 'max_position_embeddings'",
                path, "pad_token_id");
        if (c.Head != HeadKind.MeanPooling && c.Labels.Count == 0)
            throw new ModelLoadException($"{c.Architecture} needs labels: {path} has neither 'id2label' nor 'num_labels'", path, "id2label");
        return c;
    }

    public WeightTable Weights(ModelConfig c, bool withClassifier)
    {
        long h = c.HiddenSize, e = c.EmbeddingSize, inter = c.IntermediateSize;
        var roles = new List<WeightRole>
        {
            new("word", "embeddings.word_embeddings.weight", new[] { (long)c.VocabSize, e }, WeightKind.Embedding),
            new("position", "embeddings.position_embeddings.weight", new[] { (long)c.MaxPositions, e }, WeightKind.Embedding),
        };
        if (HasTokenTypes) roles.Add(new("type", "embeddings.token_type_embeddings.weight", new[] { (long)c.TypeVocabSize, e }, WeightKind.Embedding));
        roles.Add(new("norm.w", "embeddings.LayerNorm.weight", new[] { e }, WeightKind.NormWeight));
        roles.Add(new("norm.b", "embeddings.LayerNorm.bias", new[] { e }, WeightKind.NormBias));
        roles.AddRange(ProjectionRoles(c));
        for (int i = 0; i < c.Layers; i++)
        {
            var shapes = new Dictionary<string, long[]>
            {
                ["q"] = new[] { h, h }, ["k"] = new[] { h, h }, ["v"] = new[] { h, h }, ["o"] = new[] { h, h },
                ["ff1"] = new[] { inter, h }, ["ff1.b"] = new[] { inter }, ["ff2"] = new[] { h, inter },
            };
            foreach (var (part, name) in LayerKeys)
            {
                var kind = part.StartsWith("ln") ? (part.EndsWith(".w") ? WeightKind.NormWeight : WeightKind.NormBias)
                    : part.EndsWith(".b") ? WeightKind.Bias : WeightKind.Matrix;
                roles.Add(new($"L{i}.{part}", LayerPrefix(i) + name, shapes.TryGetValue(part, out var s) ? s : new[] { h }, kind));
            }
        }
        roles.AddRange(HeadRoles(c, withClassifier));
        return new WeightTable(BodyPrefix, roles);
    }

    /// <summary>ELECTRA's embedding projection; none elsewhere.</summary>
    protected virtual IEnumerable<WeightRole> ProjectionRoles(ModelConfig c) => Array.Empty<WeightRole>();

    /// <summary>The head's parameters: dense (pooler / pre_classifier / classifier.dense) and the classifier.</summary>
    protected virtual IEnumerable<WeightRole> HeadRoles(ModelConfig c, bool withClassifier)
    {
        long h = c.HiddenSize, n = c.Labels.Count;
        (string dense, bool denseInBody, string cls)? names = c.Head switch
        {
            HeadKind.BertPooler => ("pooler.dense", true, "classifier"),
            HeadKind.DistilBertPreClassifier => ("pre_classifier", false, "classifier"),
            HeadKind.RobertaClassificationHead or HeadKind.ElectraClassificationHead => ("classifier.dense", false, "classifier.out_proj"),
            _ => null,
        };
        if (names is { } k)
        {
            yield return new("dense", k.dense + ".weight", new[] { h, h }, WeightKind.Matrix, k.denseInBody);
            yield return new("dense.b", k.dense + ".bias", new[] { h }, WeightKind.Bias, k.denseInBody);
            yield return new("cls", k.cls + ".weight", new[] { n, h }, WeightKind.Matrix, false);
            yield return new("cls.b", k.cls + ".bias", new[] { n }, WeightKind.Bias, false);
        }
        else if (withClassifier)
        {
            yield return new("cls", "classifier.weight", new[] { n, h }, WeightKind.Matrix, false);
            yield return new("cls.b", "classifier.bias", new[] { n }, WeightKind.Bias, false);
        }
    }

    public virtual bool IsIgnorable(string key, ModelConfig config) =>
        key.EndsWith("embeddings.position_ids", StringComparison.Ordinal) ||
        key.EndsWith("embeddings.token_type_ids", StringComparison.Ordinal) ||
        (config.Head != HeadKind.BertPooler && key.Contains("pooler.", StringComparison.Ordinal));

    public ITextModel Build(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights) => new TransformerClassifier(config, weights);

    /// <summary>"Which architecture" error for a config without one, naming the keys that would have decided it.</summary>
    protected static ModelLoadException Undecided(string configPath, string modelType, string missing) => new(
        $"{configPath} has model_type '{modelType}' but no 'architectures', and the weights do not decide the head: {missing}. " +
        "Add \"architectures\": [...] to config.json, or use a checkpoint with its head.", configPath, "architectures");

    protected static bool HasAny(IReadOnlyCollection<string> keys, string suffix) =>
        keys.Any(k => k == suffix || k.EndsWith("." + suffix, StringComparison.Ordinal));
}
