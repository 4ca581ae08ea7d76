namespace AttributionFleet.Engine.Checkpoints;

/// <summary>
/// The Hugging Face state-dict names and shapes each family uses, so that loading and saving agree.
/// Encoder keys carry the family prefix (<c>bert.</c>, <c>roberta.</c>, <c>distilbert.</c>) in
/// *ForSequenceClassification checkpoints and none in bare encoders; head keys never do.
/// </summary>
public static class CheckpointLayout
{
    public sealed record Key(string Name, long[] Shape);

    public static string Prefix(ModelFamily family) => family switch
    {
        ModelFamily.Bert => "bert.",
        ModelFamily.DistilBert => "distilbert.",
        ModelFamily.Roberta => "roberta.",
        _ => "",
    };

    /// <summary>Keys that may appear in a checkpoint without being used (buffers, an unused pooler).</summary>
    public static bool IsIgnorable(string key, ModelConfig config) =>
        key.EndsWith("embeddings.position_ids", StringComparison.Ordinal) ||
        key.EndsWith("embeddings.token_type_ids", StringComparison.Ordinal) ||
        (config.Head != HeadKind.BertPooler && key.Contains("pooler.", StringComparison.Ordinal));

    /// <summary>Encoder keys by role, without prefix. Roles: word, position, type, norm.w, norm.b, and per layer "L{i}.{part}".</summary>
    public static Dictionary<string, Key> EncoderKeys(ModelConfig c)
    {
        long h = c.HiddenSize, inter = c.IntermediateSize;
        var keys = new Dictionary<string, Key>
        {
            ["word"] = new("embeddings.word_embeddings.weight", new[] { (long)c.VocabSize, h }),
            ["position"] = new("embeddings.position_embeddings.weight", new[] { (long)c.MaxPositions, h }),
            ["norm.w"] = new("embeddings.LayerNorm.weight", new[] { h }),
            ["norm.b"] = new("embeddings.LayerNorm.bias", new[] { h }),
        };
        if (c.Family != ModelFamily.DistilBert)
            keys["type"] = new("embeddings.token_type_embeddings.weight", new[] { (long)c.TypeVocabSize, h });
        for (int i = 0; i < c.Layers; i++)
        {
            bool distil = c.Family == ModelFamily.DistilBert;
            string p = distil ? $"transformer.layer.{i}." : $"encoder.layer.{i}.";
            void Add(string role, string name, params long[] shape) => keys[$"L{i}.{role}"] = new(p + name, shape);
            Add("q", distil ? "attention.q_lin.weight" : "attention.self.query.weight", h, h);
            Add("q.b", distil ? "attention.q_lin.bias" : "attention.self.query.bias", h);
            Add("k", distil ? "attention.k_lin.weight" : "attention.self.key.weight", h, h);
            Add("k.b", distil ? "attention.k_lin.bias" : "attention.self.key.bias", h);
            Add("v", distil ? "attention.v_lin.weight" : "attention.self.value.weight", h, h);
            Add("v.b", distil ? "attention.v_lin.bias" : "attention.self.value.bias", h);
            Add("o", distil ? "attention.out_lin.weight" : "attention.output.dense.weight", h, h);
            Add("o.b", distil ? "attention.out_lin.bias" : "attention.output.dense.bias", h);
            Add("ln1.w", distil ? "sa_layer_norm.weight" : "attention.output.LayerNorm.weight", h);
            Add("ln1.b", distil ? "sa_layer_norm.bias" : "attention.output.LayerNorm.bias", h);
            Add("ff1", distil ? "ffn.lin1.weight" : "intermediate.dense.weight", inter, h);
            Add("ff1.b", distil ? "ffn.lin1.bias" : "intermediate.dense.bias", inter);
            Add("ff2", distil ? "ffn.lin2.weight" : "output.dense.weight", h, inter);
            Add("ff2.b", distil ? "ffn.lin2.bias" : "output.dense.bias", h);
            Add("ln2.w", distil ? "output_layer_norm.weight" : "output.LayerNorm.weight", h);
            Add("ln2.b", distil ? "output_layer_norm.bias" : "output.LayerNorm.bias", h);
        }
        return keys;
    }

    /// <summary>Head keys by role: dense, dense.b, cls, cls.b (encoder-prefixed names marked with a leading '^').</summary>
    public static Dictionary<string, Key> HeadKeys(ModelConfig c, bool withClassifier)
    {
        long h = c.HiddenSize, n = c.Labels.Count;
        var keys = new Dictionary<string, Key>();
        switch (c.Head)
        {
            case HeadKind.BertPooler:
                keys["dense"] = new("^pooler.dense.weight", new[] { h, h });
                keys["dense.b"] = new("^pooler.dense.bias", new[] { h });
                keys["cls"] = new("classifier.weight", new[] { n, h });
                keys["cls.b"] = new("classifier.bias", new[] { n });
                break;
            case HeadKind.DistilBertPreClassifier:
                keys["dense"] = new("pre_classifier.weight", new[] { h, h });
                keys["dense.b"] = new("pre_classifier.bias", new[] { h });
                keys["cls"] = new("classifier.weight", new[] { n, h });
                keys["cls.b"] = new("classifier.bias", new[] { n });
                break;
            case HeadKind.RobertaClassificationHead:
                keys["dense"] = new("classifier.dense.weight", new[] { h, h });
                keys["dense.b"] = new("classifier.dense.bias", new[] { h });
                keys["cls"] = new("classifier.out_proj.weight", new[] { n, h });
                keys["cls.b"] = new("classifier.out_proj.bias", new[] { n });
                break;
            case HeadKind.MeanPooling when withClassifier:
                keys["cls"] = new("classifier.weight", new[] { n, h });
                keys["cls.b"] = new("classifier.bias", new[] { n });
                break;
        }
        return keys;
    }
}
