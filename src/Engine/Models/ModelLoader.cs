using AttributionFleet.Engine.Checkpoints;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Models;

/// <summary>
/// Loads a classifier from a folder in Hugging Face layout (config.json + model.safetensors). Every
/// problem with the keys — missing, unexpected, mis-shaped — is collected and reported in one
/// <see cref="ModelLoadException"/>; nothing half-loaded is returned.
/// </summary>
public static class ModelLoader
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = CheckpointFolder.SafeTensorsFileName;

    public static TransformerClassifier Load(string modelDir, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        if (!Directory.Exists(modelDir)) throw new ModelLoadException($"Model folder not found: {modelDir}", modelDir);
        var config = ModelConfig.Load(Path.Combine(modelDir, ConfigFile));
        using var file = CheckpointFolder.OpenWeights(modelDir);
        return Load(config, file, device, dtype);
    }

    public static TransformerClassifier Load(ModelConfig config, ITensorSource file, Device? device, ScalarType dtype)
    {
        TransformerClassifier.ActivationFor(config.HiddenAct); // unsupported activation: fail before reading weights
        var entries = file.Tensors;
        var prefix = CheckpointLayout.Prefix(config.Family);
        if (!entries.ContainsKey(prefix + "embeddings.word_embeddings.weight")) prefix = "";

        var encoder = CheckpointLayout.EncoderKeys(config);
        bool withClassifier = config.Head != HeadKind.MeanPooling || entries.ContainsKey("classifier.weight");
        if (config.Head != HeadKind.MeanPooling && config.Labels.Count == 0)
            throw new ModelLoadException($"{config.Architecture} needs labels: config.json has neither 'id2label' nor 'num_labels'", file.Path, "id2label");
        if (config.Head == HeadKind.MeanPooling && withClassifier && config.Labels.Count == 0)
            config = config with { Labels = Enumerable.Range(0, (int)entries["classifier.weight"].Shape[0]).Select(i => $"LABEL_{i}").ToList() };
        var head = CheckpointLayout.HeadKeys(config, withClassifier);

        string Resolve(string name) => name.StartsWith('^') ? prefix + name[1..] : name;
        var expected = new Dictionary<string, (string Role, long[] Shape)>();
        foreach (var (role, key) in encoder) expected[prefix + key.Name] = ("enc:" + role, key.Shape);
        foreach (var (role, key) in head) expected[Resolve(key.Name)] = ("head:" + role, key.Shape);

        var problems = new List<string>();
        foreach (var (name, (_, shape)) in expected)
        {
            if (!entries.TryGetValue(name, out var entry)) problems.Add($"missing key '{name}'");
            else if (!entry.Shape.SequenceEqual(shape))
                problems.Add($"key '{name}' has shape [{string.Join(",", entry.Shape)}], expected [{string.Join(",", shape)}]");
        }
        foreach (var name in entries.Keys)
            if (!expected.ContainsKey(name) && !CheckpointLayout.IsIgnorable(name, config))
                problems.Add($"unexpected key '{name}'");
        if (problems.Count > 0)
            throw new ModelLoadException(
                $"Checkpoint {file.Path} does not match {config.Architecture} (config: {config.Layers} layers, hidden {config.HiddenSize}): " +
                string.Join("; ", problems), file.Path, problems[0]);

        var loaded = new List<Tensor>();
        Tensor Get(string name)
        {
            var t = file.Load(name, dtype, device);
            loaded.Add(t);
            return t;
        }
        try
        {
            Tensor E(string role) => Get(prefix + encoder[role].Name);
            Tensor? H(string role) => head.TryGetValue(role, out var k) ? Get(Resolve(k.Name)) : null;
            var layers = new List<EncoderLayerWeights>();
            for (int i = 0; i < config.Layers; i++)
            {
                Tensor L(string part) => E($"L{i}.{part}");
                layers.Add(new EncoderLayerWeights(L("q"), L("q.b"), L("k"), L("k.b"), L("v"), L("v.b"), L("o"), L("o.b"),
                    L("ln1.w"), L("ln1.b"), L("ff1"), L("ff1.b"), L("ff2"), L("ff2.b"), L("ln2.w"), L("ln2.b")));
            }
            return new TransformerClassifier(config, E("word"), E("position"),
                encoder.ContainsKey("type") ? E("type") : null, E("norm.w"), E("norm.b"), layers,
                H("dense"), H("dense.b"), H("cls"), H("cls.b"));
        }
        catch
        {
            foreach (var t in loaded) t.Dispose();
            throw;
        }
    }

    /// <summary>Writes a model's weights with the Hugging Face names of its family (bare encoders unprefixed).</summary>
    public static void SaveWeights(TransformerClassifier model, string path)
    {
        var c = model.Config;
        var prefix = c.Head == HeadKind.MeanPooling ? "" : CheckpointLayout.Prefix(c.Family);
        var encoder = CheckpointLayout.EncoderKeys(c);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        void Add(Dictionary<string, CheckpointLayout.Key> keys, string role, Tensor? t)
        {
            if (t is null) return;
            var name = keys[role].Name;
            tensors.Add(new(name.StartsWith('^') ? prefix + name[1..] : (ReferenceEquals(keys, encoder) ? prefix + name : name), t));
        }
        Add(encoder, "word", model.WordEmbeddingTable);
        Add(encoder, "position", model.PositionEmbeddings);
        if (model.TokenTypeEmbeddings is not null) Add(encoder, "type", model.TokenTypeEmbeddings);
        Add(encoder, "norm.w", model.EmbeddingNormWeight);
        Add(encoder, "norm.b", model.EmbeddingNormBias);
        for (int i = 0; i < c.Layers; i++)
        {
            var l = model.Layers[i];
            var parts = new (string, Tensor)[]
            {
                ("q", l.Query), ("q.b", l.QueryBias), ("k", l.Key), ("k.b", l.KeyBias), ("v", l.Value), ("v.b", l.ValueBias),
                ("o", l.AttentionOut), ("o.b", l.AttentionOutBias), ("ln1.w", l.AttentionNormWeight), ("ln1.b", l.AttentionNormBias),
                ("ff1", l.Intermediate), ("ff1.b", l.IntermediateBias), ("ff2", l.Output), ("ff2.b", l.OutputBias),
                ("ln2.w", l.OutputNormWeight), ("ln2.b", l.OutputNormBias),
            };
            foreach (var (part, t) in parts) Add(encoder, $"L{i}.{part}", t);
        }
        var head = CheckpointLayout.HeadKeys(c, model.HasClassifier);
        Add(head, "dense", model.HeadDense);
        Add(head, "dense.b", model.HeadDenseBias);
        Add(head, "cls", model.Classifier);
        Add(head, "cls.b", model.ClassifierBias);
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }
}
