using AttributionFleet.Engine.Architectures;
using AttributionFleet.Engine.Checkpoints;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Models;

/// <summary>
/// Loads a model from a folder in Hugging Face layout (config.json + weights through <see cref="CheckpointFolder"/>)
/// by its architecture's <see cref="WeightTable"/>. Every problem with the keys — missing, unexpected, mis-shaped —
/// is collected and reported in one <see cref="ModelLoadException"/>; nothing half-loaded is returned.
/// </summary>
public static class ModelLoader
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = CheckpointFolder.SafeTensorsFileName;

    public static ITextModel Load(string modelDir, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        if (!Directory.Exists(modelDir)) throw new ModelLoadException($"Model folder not found: {modelDir}", modelDir);
        modelDir = CheckpointFolder.Resolve(modelDir); // a hub-cache folder (models--org--name) names its snapshot
        var configPath = Path.Combine(modelDir, ConfigFile);
        if (!File.Exists(configPath)) throw new ModelLoadException($"Model config not found: {configPath}", configPath);
        // The config first, so that its errors come before the weights' (a config without "architectures" reads the
        // weights' names to decide its head).
        var config = ModelConfig.Load(configPath);
        using var file = CheckpointFolder.OpenWeights(modelDir);
        return Load(config, file, device, dtype);
    }

    public static ITextModel Load(ModelConfig config, ITensorSource file, Device? device, ScalarType dtype)
    {
        var architecture = ArchitectureRegistry.Of(config);
        var entries = file.Tensors;
        // A bare encoder may carry a linear classifier (classifier.weight) on its mean pooling.
        bool withClassifier = config.Head != HeadKind.MeanPooling || entries.ContainsKey("classifier.weight");
        if (config.Head == HeadKind.MeanPooling && withClassifier && config.Labels.Count == 0)
            config = config with
            {
                Labels = Enumerable.Range(0, (int)entries["classifier.weight"].Shape[0]).Select(i => $"LABEL_{i}").ToList(),
                Problem = entries["classifier.weight"].Shape[0] == 1 ? ProblemType.Regression : ProblemType.SingleLabel,
            };
        if (!withClassifier) config = config with { Problem = ProblemType.Embedding };
        var table = architecture.Weights(config, withClassifier);
        var prefix = table.PrefixIn(entries.Keys.ToList());

        var expected = table.Roles.ToDictionary(r => table.KeyOf(r, prefix), r => r);
        var problems = new List<string>();
        foreach (var (name, role) in expected)
        {
            if (!entries.TryGetValue(name, out var entry)) problems.Add($"missing key '{name}'");
            else if (!entry.Shape.SequenceEqual(role.Shape))
                problems.Add($"key '{name}' has shape [{string.Join(",", entry.Shape)}], expected [{string.Join(",", role.Shape)}]");
        }
        foreach (var name in entries.Keys)
            if (!expected.ContainsKey(name) && !architecture.IsIgnorable(name, config))
                problems.Add($"unexpected key '{name}'");
        if (problems.Count > 0)
            throw new ModelLoadException(
                $"Checkpoint {file.Path} does not match {config.Architecture} (config: {config.Layers} layers, hidden {config.HiddenSize}): " +
                string.Join("; ", problems), file.Path, problems[0]);

        var loaded = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (name, role) in expected) loaded[role.Role] = file.Load(name, dtype, device);
            return architecture.Build(config, loaded);
        }
        catch
        {
            foreach (var t in loaded.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Writes a model's weights with the Hugging Face names of its family (bare encoders unprefixed).</summary>
    public static void SaveWeights(ITextModel model, string path)
    {
        var c = model.Config;
        var table = ArchitectureRegistry.Of(c).Weights(c, model.HasClassifier);
        var prefix = c.Head == HeadKind.MeanPooling ? "" : table.BodyPrefix;
        var tensors = table.Roles.Where(r => model.Weights.ContainsKey(r.Role))
            .Select(r => new KeyValuePair<string, Tensor>(table.KeyOf(r, prefix), model.Weights[r.Role])).ToList();
        SafeTensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }
}
