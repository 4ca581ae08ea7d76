using System.Collections.Concurrent;
using Microsoft.ML.OnnxRuntime;

namespace AttributionFleet.Engine.Tests.Support;

/// <summary>
/// Runs an ONNX BERT encoder with ONNX Runtime (CPU) as the reference for parity tests. One
/// <see cref="InferenceSession"/> per model path is created on first use and kept for the process.
/// </summary>
public static class OnnxReference
{
    private static readonly ConcurrentDictionary<string, Lazy<InferenceSession>> Sessions = new(StringComparer.Ordinal);

    /// <summary>The <c>last_hidden_state</c> output, [batch, seq, hidden].</summary>
    public static float[,,] LastHiddenState(string onnxPath, long[,] inputIds, long[,] attentionMask, long[,] tokenTypeIds)
    {
        int batch = inputIds.GetLength(0), seq = inputIds.GetLength(1);
        foreach (var (name, array) in new[] { ("attentionMask", attentionMask), ("tokenTypeIds", tokenTypeIds) })
            if (array.GetLength(0) != batch || array.GetLength(1) != seq)
                throw new ArgumentException($"{name} is [{array.GetLength(0)}, {array.GetLength(1)}], input ids are [{batch}, {seq}]", name);

        var session = Session(onnxPath);
        long[] shape = [batch, seq];
        var feeds = new Dictionary<string, long[,]>
        {
            ["input_ids"] = inputIds,
            ["attention_mask"] = attentionMask,
            ["token_type_ids"] = tokenTypeIds,
        };
        var inputNames = session.InputMetadata.Keys.ToList();
        var inputs = new List<OrtValue>(inputNames.Count);
        try
        {
            foreach (var name in inputNames)
            {
                if (!feeds.TryGetValue(name, out var values))
                    throw new InvalidOperationException($"'{onnxPath}' has an input '{name}' that OnnxReference does not feed");
                inputs.Add(OrtValue.CreateTensorValueFromMemory(Flatten(values), shape));
            }
            string output = session.OutputMetadata.ContainsKey("last_hidden_state")
                ? "last_hidden_state"
                : session.OutputMetadata.Keys.First();
            using var options = new RunOptions();
            using var results = session.Run(options, inputNames, inputs, [output]);
            var result = results[0];
            var dims = result.GetTensorTypeAndShape().Shape;
            if (dims.Length != 3 || dims[0] != batch || dims[1] != seq)
                throw new InvalidOperationException($"'{output}' has shape [{string.Join(", ", dims)}], expected [{batch}, {seq}, hidden]");
            int hidden = (int)dims[2];
            var data = result.GetTensorDataAsSpan<float>();
            var hiddenStates = new float[batch, seq, hidden];
            int k = 0;
            for (int b = 0; b < batch; b++)
                for (int s = 0; s < seq; s++)
                    for (int h = 0; h < hidden; h++)
                        hiddenStates[b, s, h] = data[k++];
            return hiddenStates;
        }
        finally
        {
            foreach (var value in inputs) value.Dispose();
        }
    }

    private static InferenceSession Session(string onnxPath) =>
        Sessions.GetOrAdd(Path.GetFullPath(onnxPath),
            path => new Lazy<InferenceSession>(() => new InferenceSession(path), LazyThreadSafetyMode.ExecutionAndPublication)).Value;

    private static long[] Flatten(long[,] values)
    {
        var flat = new long[values.Length];
        int k = 0;
        foreach (long v in values) flat[k++] = v;
        return flat;
    }
}
