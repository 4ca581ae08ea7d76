using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;

namespace AttributionFleet.Engine.Architectures;

/// <summary>Reading config.json fields with errors that name the file and the field.</summary>
public static class ConfigFields
{
    public static ModelLoadException Missing(string path, string field) =>
        new($"Missing field '{field}' in {path}", path, field);

    public static string? Str(JsonElement root, string field, string path) =>
        root.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null
            ? (v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ModelLoadException($"Field '{field}' in {path} must be a string", path, field))
            : null;

    public static int Int(JsonElement root, string field, string path)
    {
        if (!root.TryGetProperty(field, out var v)) throw Missing(path, field);
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i) || i <= 0)
            throw new ModelLoadException($"Field '{field}' in {path} must be a positive integer, got {v}", path, field);
        return i;
    }

    public static int IntOr(JsonElement root, string field, string path, int fallback) =>
        root.TryGetProperty(field, out _) ? Int(root, field, path) : fallback;

    public static double Double(JsonElement root, string field, string path, double fallback)
    {
        if (!root.TryGetProperty(field, out var v)) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d) || !(d > 0))
            throw new ModelLoadException($"Field '{field}' in {path} must be a positive number, got {v}", path, field);
        return d;
    }

    /// <summary>A token id (pad_token_id): a non-negative integer, or the fallback when absent or null.</summary>
    public static int TokenId(JsonElement root, string field, string path, int fallback)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i) || i < 0)
            throw new ModelLoadException($"Field '{field}' in {path} must be a non-negative integer, got {v}", path, field);
        return i;
    }

    /// <summary>The label names from id2label (indices 0..n−1, none skipped), else LABEL_i for num_labels.</summary>
    public static List<string> Labels(JsonElement root, string path)
    {
        var labels = new List<string>();
        if (root.TryGetProperty("id2label", out var id2label) && id2label.ValueKind == JsonValueKind.Object)
        {
            var pairs = new SortedDictionary<int, string>();
            foreach (var p in id2label.EnumerateObject())
            {
                if (!int.TryParse(p.Name, out var idx) || idx < 0)
                    throw new ModelLoadException($"Field 'id2label' in {path} has a non-integer key '{p.Name}'", path, "id2label");
                pairs[idx] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : $"LABEL_{idx}";
            }
            for (int i = 0; i < pairs.Count; i++)
                labels.Add(pairs.TryGetValue(i, out var l) ? l : throw new ModelLoadException($"Field 'id2label' in {path} skips index {i}", path, "id2label"));
        }
        else if (root.TryGetProperty("num_labels", out var nl))
        {
            if (!nl.TryGetInt32(out var count) || count < 1)
                throw new ModelLoadException($"Field 'num_labels' in {path} must be a positive integer, got {nl}", path, "num_labels");
            for (int i = 0; i < count; i++) labels.Add($"LABEL_{i}");
        }
        return labels;
    }

    /// <summary>
    /// What a classification head's outputs mean, as Hugging Face decides it: <c>problem_type</c> when given, else
    /// regression for one label and single-label classification otherwise.
    /// </summary>
    public static ProblemType Problem(JsonElement root, string path, int labels) => Str(root, "problem_type", path) switch
    {
        null => labels == 1 ? ProblemType.Regression : ProblemType.SingleLabel,
        "single_label_classification" => labels == 1
            ? throw new ModelLoadException($"{path}: 'problem_type' single_label_classification needs at least 2 labels (a softmax of one label is always 1); with one label use regression or multi_label_classification", path, "problem_type")
            : ProblemType.SingleLabel,
        "multi_label_classification" => ProblemType.MultiLabel,
        "regression" => ProblemType.Regression,
        var other => throw new ModelLoadException(
            $"Unknown 'problem_type' '{other}' in {path}; expected single_label_classification, multi_label_classification or regression", path, "problem_type"),
    };

    public static string Activation(JsonElement root, string field, string path, string fallback)
    {
        var act = Str(root, field, path) ?? fallback;
        if (!ModelConfig.SupportedActivations.Contains(act))
            throw new ModelLoadException($"Unsupported {field} '{act}' in {path}; supported: {string.Join(", ", ModelConfig.SupportedActivations)}", path, field);
        return act;
    }
}
