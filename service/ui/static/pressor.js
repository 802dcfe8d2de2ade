// pressor web app: the one piece of script of its own (the page works without it).
// A file chosen in an <input type="file" data-fills="ID"> is read into the textarea ID,
// so that a bundle can be uploaded without a multipart request.
document.addEventListener("change", function (event) {
  var input = event.target;
  if (!input.matches || !input.matches("input[type=file][data-fills]") || !input.files.length) {
    return;
  }
  var target = document.getElementById(input.getAttribute("data-fills"));
  var reader = new FileReader();
  reader.onload = function () { target.value = reader.result; };
  reader.readAsText(input.files[0]);
});
