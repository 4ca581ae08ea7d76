using System.Text.Json;
using AttributionFleet.Engine.Architectures.Bert;
using AttributionFleet.Engine.Architectures.DebertaV2;
using AttributionFleet.Engine.Architectures.DistilBert;
using AttributionFleet.Engine.Architectures.Electra;
using AttributionFleet.Engine.Architectures.Roberta;
using AttributionFleet.Engine.Checkpoints;

namespace AttributionFleet.Engine.Architectures;

/// <summary>
/// The families the engine knows. Adding one is a folder under src/Engine/Architectures and one line here.
/// A config names its architecture in "architectures"; without it, the family of its "model_type" decides from the
/// weights present (pooler + classifier ⇒ BertForSequenceClassification) or says what is missing.
/// </summary>
public static class ArchitectureRegistry
{
    public static IReadOnlyList<IArchitecture> All { get; } = new IArchitecture[]
    {
        new BertArchitecture(),
        new DistilBertArchitecture(),
        new RobertaArchitecture(),
        new XlmRobertaArchitecture(),
        new ElectraArchitecture(),
        new DebertaV2Architecture(),
    };

    public static IReadOnlyList<string> SupportedNames { get; } = All.SelectMany(a => a.Names).ToList();

    public static IArchitecture ForName(string architecture) =>
        All.FirstOrDefault(a => a.Names.Contains(architecture))
        ?? throw new ModelLoadException($"Unknown architecture '{architecture}'; supported: {string.Join(", ", SupportedNames)}", field: "architectures");

    public static IArchitecture Of(ModelConfig config) => ForName(config.Architecture);

    /// <summary>
    /// The family and architecture name of a config.json. <paramref name="weightKeys"/>: the checkpoint's tensor names,
    /// or null to read them from the weights beside <paramref name="path"/> when "architectures" is absent.
    /// </summary>
    public static (IArchitecture Architecture, string Name) Resolve(JsonElement root, string path, IReadOnlyCollection<string>? weightKeys)
    {
        if (root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0)
        {
            var name = archs[0].ValueKind == JsonValueKind.String ? archs[0].GetString() ?? "" : "";
            var known = All.FirstOrDefault(a => a.Names.Contains(name));
            if (known is null)
                throw new ModelLoadException(
                    $"Unknown architecture '{name}' in {path} (field 'architectures'); supported: {string.Join(", ", SupportedNames)}", path, "architectures");
            return (known, name);
        }
        var modelType = ConfigFields.Str(root, "model_type", path) ?? throw new ModelLoadException(
            $"{path} has neither 'architectures' nor 'model_type': add \"architectures\": [\"<one of {string.Join(", ", SupportedNames)}>\"]", path, "architectures");
        var family = All.FirstOrDefault(a => a.ModelTypes.Contains(modelType)) ?? throw new ModelLoadException(
            $"Unknown model_type '{modelType}' in {path} (and no 'architectures'); supported model types: {string.Join(", ", All.SelectMany(a => a.ModelTypes))}", path, "model_type");
        weightKeys ??= KeysBeside(path);
        return (family, family.ResolveFromWeights(weightKeys, path));
    }

    private static IReadOnlyCollection<string> KeysBeside(string configPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(configPath))!;
        using var weights = CheckpointFolder.OpenWeights(dir);
        return weights.Tensors.Keys.ToList();
    }
}
