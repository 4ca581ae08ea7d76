using System.Text.Json;
using AttributionFleet.Engine.Tests.Support;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>The checkpoints of tests/fixtures/architectures (made by its generate.py) and their reference case.</summary>
public static class ArchitectureFixtures
{
    public static string Folder(string name) => Path.Combine(RepoPaths.Root, "tests", "fixtures", "architectures", name);

    public static (Tensor Ids, Tensor Mask, Tensor Logits32, Tensor Logits64) Case(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder(name), "case.json")));
        var c = doc.RootElement;
        return (tensor(Json.Long2(c.GetProperty("input_ids"))), tensor(Json.Long2(c.GetProperty("attention_mask"))),
            tensor(Json.Double2(c.GetProperty("logits_f32"))), tensor(Json.Double2(c.GetProperty("logits_f64"))));
    }

    /// <summary>A copy of a fixture folder whose config.json <paramref name="edit"/> changes.</summary>
    public static string CopyWithConfig(string name, string into, Action<System.Text.Json.Nodes.JsonObject> edit)
    {
        Directory.CreateDirectory(into);
        foreach (var f in Directory.GetFiles(Folder(name))) File.Copy(f, Path.Combine(into, Path.GetFileName(f)), overwrite: true);
        var path = Path.Combine(into, "config.json");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(config);
        File.WriteAllText(path, config.ToJsonString());
        return into;
    }
}
