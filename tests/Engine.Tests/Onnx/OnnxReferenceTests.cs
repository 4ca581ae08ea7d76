using AttributionFleet.Engine.Tests.Support;
using Xunit;

namespace AttributionFleet.Engine.Tests.Onnx;

public class OnnxReferenceTests
{
    private static readonly string[] Sentences = ["the cat sat on the mat", "hello world", "a short sentence about nothing at all"];

    /// <summary>Word-level ids from vocab.txt (every word chosen is a whole token), [CLS] … [SEP], 0-padded.</summary>
    private static (long[,] Ids, long[,] Mask, long[,] Types) Batch()
    {
        var vocab = File.ReadLines(MiniLmModel.VocabPath).Select((token, id) => (token, id)).ToDictionary(p => p.token, p => (long)p.id);
        Assert.Equal(101, vocab["[CLS]"]);
        Assert.Equal(102, vocab["[SEP]"]);
        Assert.Equal(0, vocab["[PAD]"]);
        var rows = Sentences.Select(s => new[] { 101L }.Concat(s.Split(' ').Select(w => vocab[w])).Append(102L).ToArray()).ToArray();
        int length = rows.Max(r => r.Length);
        var ids = new long[rows.Length, length];
        var mask = new long[rows.Length, length];
        var types = new long[rows.Length, length];
        for (int b = 0; b < rows.Length; b++)
            for (int s = 0; s < rows[b].Length; s++)
            {
                ids[b, s] = rows[b][s];
                mask[b, s] = 1;
            }
        return (ids, mask, types);
    }

    [Fact]
    public void LastHiddenState_PaddedBatchOfThree_IsFiniteWithHidden384()
    {
        var (ids, mask, types) = Batch();
        int length = ids.GetLength(1);
        var hidden = OnnxReference.LastHiddenState(MiniLmModel.OnnxPath, ids, mask, types);

        Assert.Equal(3, hidden.GetLength(0));
        Assert.Equal(length, hidden.GetLength(1));
        Assert.Equal(384, hidden.GetLength(2));
        foreach (float v in hidden) Assert.True(float.IsFinite(v));

        // padding is masked out: the short sentence alone gives the same states for its real tokens
        int shortLength = Sentences[1].Split(' ').Length + 2;
        var alone = OnnxReference.LastHiddenState(MiniLmModel.OnnxPath,
            Slice(ids, 1, shortLength), Slice(mask, 1, shortLength), Slice(types, 1, shortLength));
        for (int s = 0; s < shortLength; s++)
            for (int h = 0; h < 384; h++)
                Assert.True(Math.Abs(alone[0, s, h] - hidden[1, s, h]) < 1e-4f, $"token {s}, unit {h}: {alone[0, s, h]} vs {hidden[1, s, h]}");
    }

    private static long[,] Slice(long[,] source, int row, int length)
    {
        var result = new long[1, length];
        for (int s = 0; s < length; s++) result[0, s] = source[row, s];
        return result;
    }
}
